// The latency plot: latency by percentile from the HdrHistograms, as a
// hand-written SVG. The x axis is the usual percentile scale for latency,
// x = -log10(1 - p/100), so 0, 90, 99, 99.9 … are evenly spaced; the y axis is
// linear in milliseconds.

import Foundation

/// One curve: a name for the legend and the histogram of successful calls (microseconds).
struct LatencyCurve {
    var name: String
    var histogram: LatencyHistogram
}

enum LatencyPlot {
    static let width = 960.0
    static let height = 540.0
    static let left = 80.0, right = 190.0, top = 64.0, bottom = 64.0
    /// The x axis stops at 99.9999 % (x = 6) at most.
    static let maxDecades = 6.0
    /// Points per decade of the x axis.
    static let pointsPerDecade = 60.0
    static let palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]

    /// The SVG document. The first curve is drawn black and thicker (the overall one); curves of
    /// histograms without values are left out (and named as such in the legend).
    static func svg(title: String, subtitle: String, curves: [LatencyCurve]) -> String {
        let plotted = curves.filter { $0.histogram.totalCount > 0 }
        let decades = min(maxDecades, max(1, ceil(plotted.map { log10(Double($0.histogram.totalCount)) }.max() ?? 1)))
        let maxMillis = Double(plotted.map(\.histogram.max).max() ?? 1) / 1000
        let (yStep, yMax) = niceAxis(maxMillis)
        let plotW = width - left - right, plotH = height - top - bottom
        func px(_ x: Double) -> Double { left + x / decades * plotW }
        func py(_ ms: Double) -> Double { top + plotH - min(ms, yMax) / yMax * plotH }

        var out = """
        <?xml version="1.0" encoding="UTF-8"?>
        <svg xmlns="http://www.w3.org/2000/svg" width="\(fmt(width))" height="\(fmt(height))" \
        viewBox="0 0 \(fmt(width)) \(fmt(height))" font-family="sans-serif" font-size="12">
        <rect x="0" y="0" width="\(fmt(width))" height="\(fmt(height))" fill="white"/>
        <text x="\(fmt(width / 2))" y="24" text-anchor="middle" font-size="16" font-weight="bold">\(escape(title))</text>
        <text x="\(fmt(width / 2))" y="44" text-anchor="middle" fill="#444">\(escape(subtitle))</text>

        """
        // Grid, ticks and labels.
        out += "<g stroke=\"#ddd\" stroke-width=\"1\">\n"
        for d in 0...Int(decades) { out += line(px(Double(d)), top, px(Double(d)), top + plotH) }
        var y = 0.0
        while y <= yMax + yStep / 2 { out += line(left, py(y), left + plotW, py(y)); y += yStep }
        out += "</g>\n<g fill=\"#222\">\n"
        for d in 0...Int(decades) {
            out += "<text x=\"\(fmt(px(Double(d))))\" y=\"\(fmt(top + plotH + 18))\" text-anchor=\"middle\">\(percentileLabel(d))</text>\n"
        }
        let decimals = max(0, Int(-floor(log10(yStep))))
        y = 0
        while y <= yMax + yStep / 2 {
            out += "<text x=\"\(fmt(left - 8))\" y=\"\(fmt(py(y) + 4))\" text-anchor=\"end\">\(String(format: "%.\(decimals)f", y))</text>\n"
            y += yStep
        }
        out += """
        <text x="\(fmt(left + plotW / 2))" y="\(fmt(height - 18))" text-anchor="middle">percentile</text>
        <text x="20" y="\(fmt(top + plotH / 2))" text-anchor="middle" transform="rotate(-90 20 \(fmt(top + plotH / 2)))">latency (ms)</text>
        </g>
        <rect x="\(fmt(left))" y="\(fmt(top))" width="\(fmt(plotW))" height="\(fmt(plotH))" fill="none" stroke="#888"/>

        """
        // Curves, then the legend.
        var legendY = top + 8
        for (i, curve) in curves.enumerated() {
            let color = i == 0 ? "#000000" : palette[(i - 1) % palette.count]
            let strokeWidth = i == 0 ? 2.5 : 1.5
            let count = curve.histogram.totalCount
            if count > 0 {
                let points = curvePoints(curve.histogram, decades: decades)
                let d = points.enumerated().map { j, p in "\(j == 0 ? "M" : "L")\(fmt(px(p.x))),\(fmt(py(p.millis)))" }.joined(separator: " ")
                out += "<path class=\"curve\" data-operation=\"\(escape(curve.name))\" d=\"\(d)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"\(strokeWidth)\" stroke-linejoin=\"round\"/>\n"
            }
            let lx = left + plotW + 16
            out += line(lx, legendY, lx + 22, legendY, color: color, width: strokeWidth)
            let label = count > 0 ? "\(curve.name) (\(count))" : "\(curve.name) (no successful calls)"
            out += "<text x=\"\(fmt(lx + 28))\" y=\"\(fmt(legendY + 4))\">\(escape(label))</text>\n"
            legendY += 20
        }
        out += "</svg>\n"
        return out
    }

    /// Points (x, latency in ms) from x = 0 up to the percentile of the last value, then the max.
    static func curvePoints(_ h: LatencyHistogram, decades: Double) -> [(x: Double, millis: Double)] {
        let end = min(decades, log10(Double(h.totalCount)))
        let steps = max(1, Int((end * pointsPerDecade).rounded(.up)))
        var points: [(x: Double, millis: Double)] = []
        points.reserveCapacity(steps + 2)
        for s in 0...steps {
            let x = end * Double(s) / Double(steps)
            let percentile = 100 * (1 - pow(10, -x))
            points.append((x, Double(h.valueAtPercentile(percentile)) / 1000))
        }
        points.append((end, Double(h.max) / 1000))
        return points
    }

    /// A tick step of 1, 2 or 5 × 10^k giving at most about 8 ticks, and the axis top (a multiple of it).
    static func niceAxis(_ maxValue: Double) -> (step: Double, top: Double) {
        let target = max(maxValue, 0.001)
        let raw = target / 6
        let magnitude = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? 10 * magnitude
        return (step, ceil(target / step) * step)
    }

    /// 0 → "0%", 1 → "90%", 2 → "99%", 3 → "99.9%" …
    static func percentileLabel(_ decade: Int) -> String {
        switch decade {
        case 0: return "0%"
        case 1: return "90%"
        case 2: return "99%"
        default: return "99." + String(repeating: "9", count: decade - 2) + "%"
        }
    }

    private static func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double, color: String? = nil, width: Double? = nil) -> String {
        var s = "<line x1=\"\(fmt(x1))\" y1=\"\(fmt(y1))\" x2=\"\(fmt(x2))\" y2=\"\(fmt(y2))\""
        if let color { s += " stroke=\"\(color)\"" }
        if let width { s += " stroke-width=\"\(fmt(width))\"" }
        return s + "/>\n"
    }

    private static func fmt(_ v: Double) -> String { String(format: "%.1f", v) }

    static func escape(_ text: String) -> String {
        var out = ""
        for ch in text {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default: out.append(ch)
            }
        }
        return out
    }
}
