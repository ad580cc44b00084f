/*
 * sqlite-ceiling: the raw SQLite durable-commit ceiling for a ledger-like
 * write on this machine's disk, with no server, no network and no Swift.
 *
 * Each "operation" is what one spend minimally writes in our schema:
 *   - INSERT one row into `entries` (WITHOUT ROWID, key (tenant_id, seq),
 *     index (tenant_id, client_id, seq); the same columns as ours),
 *   - UPDATE the client's balance row in `clients`,
 *   - INSERT one row into `idempotency` (WITHOUT ROWID, key (tenant_id, key),
 *     index on created_micros, a small reply blob).
 * The database uses journal_mode=WAL and synchronous=FULL (our server's
 * defaults; --sync normal for comparison), statements prepared once.
 *
 * Modes: B operations per transaction (BEGIN IMMEDIATE … COMMIT), for each B in
 * --batch (default 1,16,64,256). B=1 is one durable commit per operation.
 * Each mode runs on a fresh database file, warms up, then measures for
 * --seconds (or exactly --ops operations).
 *
 * Output: one JSON line per mode on stdout, e.g.
 *   {"mode":"batch","batch":1,"ops":4500,"commits":4500,"seconds":5.001,
 *    "ops_per_s":899.8,"commits_per_s":899.8,"commit_p50_us":1010,
 *    "commit_p99_us":2300,"commit_max_us":5200,"sync":"full","clients":1000}
 * commit_*_us is the time of the whole transaction (BEGIN to COMMIT).
 *
 * Build: cc -O2 -o sqlite-ceiling tools/bench/sqlite-ceiling.c -lsqlite3
 * Usage: sqlite-ceiling --db PATH [--batch 1,16,64,256] [--seconds 5 | --ops N]
 *                       [--warmup 0.5] [--clients 1000] [--sync full|normal] [--keep]
 * The database files (PATH, PATH-wal, PATH-shm) are deleted before each mode
 * and at the end unless --keep. Put PATH on the filesystem you want measured
 * (the server's data directory), not on a tmpfs.
 */
#define _POSIX_C_SOURCE 200809L
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *SCHEMA =
    "CREATE TABLE clients ("
    "  tenant_id TEXT NOT NULL, client_id TEXT NOT NULL,"
    "  available_minor INTEGER NOT NULL CHECK (available_minor >= 0),"
    "  held_minor INTEGER NOT NULL CHECK (held_minor >= 0),"
    "  last_seq INTEGER NOT NULL,"
    "  PRIMARY KEY (tenant_id, client_id)) STRICT, WITHOUT ROWID;"
    "CREATE TABLE entries ("
    "  tenant_id TEXT NOT NULL, seq INTEGER NOT NULL CHECK (seq > 0),"
    "  type TEXT NOT NULL, client_id TEXT NOT NULL,"
    "  amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),"
    "  debit_account TEXT NOT NULL,"
    "  credit_account TEXT NOT NULL CHECK (credit_account <> debit_account),"
    "  available_after_minor INTEGER NOT NULL, held_after_minor INTEGER NOT NULL,"
    "  time_micros INTEGER NOT NULL, ref_id TEXT NOT NULL, center_id TEXT NOT NULL,"
    "  booking_ref TEXT NOT NULL, payment_ref TEXT NOT NULL,"
    "  idempotency_key TEXT NOT NULL, reason TEXT NOT NULL, note TEXT NOT NULL,"
    "  PRIMARY KEY (tenant_id, seq)) STRICT, WITHOUT ROWID;"
    "CREATE INDEX entries_by_client ON entries (tenant_id, client_id, seq);"
    "CREATE TABLE idempotency ("
    "  tenant_id TEXT NOT NULL, key TEXT NOT NULL, operation TEXT NOT NULL,"
    "  fields TEXT NOT NULL, result_id TEXT NOT NULL, seq INTEGER NOT NULL,"
    "  reply BLOB NOT NULL, created_micros INTEGER NOT NULL,"
    "  PRIMARY KEY (tenant_id, key)) STRICT, WITHOUT ROWID;"
    "CREATE INDEX idempotency_by_age ON idempotency (created_micros);";

static const char *TENANT = "bench-tenant";

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t wall_micros(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void die_db(sqlite3 *db, const char *what) {
    fprintf(stderr, "sqlite-ceiling: %s: %s\n", what, db ? sqlite3_errmsg(db) : "?");
    exit(1);
}

static void exec_or_die(sqlite3 *db, const char *sql) {
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "sqlite-ceiling: %s: %s\n", sql, err ? err : "?");
        exit(1);
    }
}

static sqlite3_stmt *prep(sqlite3 *db, const char *sql) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) die_db(db, sql);
    return st;
}

static void step_done(sqlite3 *db, sqlite3_stmt *st, const char *what) {
    if (sqlite3_step(st) != SQLITE_DONE) die_db(db, what);
    sqlite3_reset(st);
}

static void remove_db(const char *path) {
    char buf[4096];
    unlink(path);
    snprintf(buf, sizeof buf, "%s-wal", path);
    unlink(buf);
    snprintf(buf, sizeof buf, "%s-shm", path);
    unlink(buf);
    snprintf(buf, sizeof buf, "%s-journal", path);
    unlink(buf);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    sqlite3 *db;
    sqlite3_stmt *begin, *commit, *entry, *client, *idem;
    int clients;
    int64_t seq;     /* last entry seq */
    int64_t op;      /* operations applied, for keys */
    char run_id[32];
} Bench;

static void apply_op(Bench *b) {
    char client[32], key[96], ref[80];
    int c = (int)(b->op % b->clients);
    b->seq++;
    b->op++;
    snprintf(client, sizeof client, "client-%d", c);
    snprintf(key, sizeof key, "ik-%s-%lld", b->run_id, (long long)b->op);
    snprintf(ref, sizeof ref, "sp_%s_%016llx", b->run_id, (unsigned long long)b->op);
    int64_t t = wall_micros();

    /* the client's balance row: available -= 1, last_seq = seq */
    sqlite3_stmt *u = b->client;
    sqlite3_bind_int64(u, 1, b->seq);
    sqlite3_bind_text(u, 2, TENANT, -1, SQLITE_STATIC);
    sqlite3_bind_text(u, 3, client, -1, SQLITE_TRANSIENT);
    step_done(b->db, u, "update clients");

    /* the ledger entry */
    sqlite3_stmt *e = b->entry;
    sqlite3_bind_text(e, 1, TENANT, -1, SQLITE_STATIC);
    sqlite3_bind_int64(e, 2, b->seq);
    sqlite3_bind_text(e, 3, "spend", -1, SQLITE_STATIC);
    sqlite3_bind_text(e, 4, client, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(e, 5, 1);
    sqlite3_bind_text(e, 6, "client", -1, SQLITE_STATIC);
    sqlite3_bind_text(e, 7, "revenue", -1, SQLITE_STATIC);
    sqlite3_bind_int64(e, 8, 1000000000 - b->op / b->clients);
    sqlite3_bind_int64(e, 9, 0);
    sqlite3_bind_int64(e, 10, t);
    sqlite3_bind_text(e, 11, ref, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(e, 12, "c1", -1, SQLITE_STATIC);
    sqlite3_bind_text(e, 13, "", -1, SQLITE_STATIC);
    sqlite3_bind_text(e, 14, "", -1, SQLITE_STATIC);
    sqlite3_bind_text(e, 15, key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(e, 16, "service", -1, SQLITE_STATIC);
    sqlite3_bind_text(e, 17, "", -1, SQLITE_STATIC);
    step_done(b->db, e, "insert entry");

    /* the idempotency record with a reply blob about the size of a SpendCreditsResponse */
    static const unsigned char reply[96] = {0x0a, 0x5e};
    sqlite3_stmt *i = b->idem;
    sqlite3_bind_text(i, 1, TENANT, -1, SQLITE_STATIC);
    sqlite3_bind_text(i, 2, key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(i, 3, "SpendCredits", -1, SQLITE_STATIC);
    sqlite3_bind_text(i, 4, client, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(i, 5, ref, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(i, 6, b->seq);
    sqlite3_bind_blob(i, 7, reply, (int)sizeof reply, SQLITE_STATIC);
    sqlite3_bind_int64(i, 8, t);
    step_done(b->db, i, "insert idempotency");
}

static void open_bench(Bench *b, const char *path, int sync_full, int clients) {
    memset(b, 0, sizeof *b);
    b->clients = clients;
    snprintf(b->run_id, sizeof b->run_id, "%lx", (unsigned long)wall_micros());
    if (sqlite3_open_v2(path, &b->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK)
        die_db(b->db, "open");
    sqlite3_busy_timeout(b->db, 5000);
    exec_or_die(b->db, "PRAGMA journal_mode=WAL");
    exec_or_die(b->db, sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
    exec_or_die(b->db, "PRAGMA temp_store=MEMORY");
    exec_or_die(b->db, SCHEMA);
    exec_or_die(b->db, "BEGIN");
    sqlite3_stmt *ins = prep(b->db, "INSERT INTO clients VALUES (?1, ?2, 1000000000, 0, 0)");
    for (int c = 0; c < clients; c++) {
        char client[32];
        snprintf(client, sizeof client, "client-%d", c);
        sqlite3_bind_text(ins, 1, TENANT, -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 2, client, -1, SQLITE_TRANSIENT);
        step_done(b->db, ins, "insert client");
    }
    sqlite3_finalize(ins);
    exec_or_die(b->db, "COMMIT");
    b->begin = prep(b->db, "BEGIN IMMEDIATE");
    b->commit = prep(b->db, "COMMIT");
    b->entry = prep(b->db, "INSERT INTO entries VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17)");
    b->client = prep(b->db,
                     "UPDATE clients SET available_minor = available_minor - 1, last_seq = ?1 "
                     "WHERE tenant_id = ?2 AND client_id = ?3");
    b->idem = prep(b->db, "INSERT INTO idempotency VALUES (?1,?2,?3,?4,?5,?6,?7,?8)");
}

static void close_bench(Bench *b) {
    sqlite3_finalize(b->begin);
    sqlite3_finalize(b->commit);
    sqlite3_finalize(b->entry);
    sqlite3_finalize(b->client);
    sqlite3_finalize(b->idem);
    if (sqlite3_close(b->db) != SQLITE_OK) die_db(b->db, "close");
}

static void transaction(Bench *b, int batch) {
    step_done(b->db, b->begin, "begin");
    for (int k = 0; k < batch; k++) apply_op(b);
    step_done(b->db, b->commit, "commit");
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: sqlite-ceiling --db PATH [--batch 1,16,64,256] [--seconds 5 | --ops N]\n"
            "                      [--warmup 0.5] [--clients 1000] [--sync full|normal] [--keep]\n"
            "One JSON line per batch size on stdout: ops/s and commits/s of ledger-like writes\n"
            "(entry + client balance update + idempotency row per op) in WAL mode.\n");
}

int main(int argc, char **argv) {
    const char *path = NULL;
    const char *batches = "1,16,64,256";
    double seconds = 5, warmup = 0.5;
    long long max_ops = 0;
    int clients = 1000, sync_full = 1, keep = 0;
    for (int a = 1; a < argc; a++) {
        const char *o = argv[a];
        const char *v = a + 1 < argc ? argv[a + 1] : NULL;
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) { usage(stdout); return 0; }
        if (!strcmp(o, "--keep")) { keep = 1; continue; }
        if (!v) { usage(stderr); return 2; }
        if (!strcmp(o, "--db")) path = v;
        else if (!strcmp(o, "--batch")) batches = v;
        else if (!strcmp(o, "--seconds")) seconds = atof(v);
        else if (!strcmp(o, "--ops")) max_ops = atoll(v);
        else if (!strcmp(o, "--warmup")) warmup = atof(v);
        else if (!strcmp(o, "--clients")) clients = atoi(v);
        else if (!strcmp(o, "--sync")) {
            if (!strcmp(v, "full")) sync_full = 1;
            else if (!strcmp(v, "normal")) sync_full = 0;
            else { usage(stderr); return 2; }
        } else { usage(stderr); return 2; }
        a++;
    }
    if (!path || clients < 1 || (max_ops <= 0 && !(seconds > 0)) || warmup < 0) { usage(stderr); return 2; }

    char *list = strdup(batches);
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int batch = atoi(tok);
        if (batch < 1) { fprintf(stderr, "sqlite-ceiling: bad batch size '%s'\n", tok); return 2; }
        remove_db(path);
        Bench b;
        open_bench(&b, path, sync_full, clients);

        double w_end = now_s() + warmup;
        while (warmup > 0 && now_s() < w_end) transaction(&b, batch);

        size_t cap = 4096, n = 0;
        uint64_t *lat = malloc(cap * sizeof *lat);
        long long ops = 0;
        double t0 = now_s(), t = t0, end = t0 + seconds;
        for (;;) {
            int this_batch = batch;
            if (max_ops > 0) {
                if (ops >= max_ops) break;
                if (max_ops - ops < this_batch) this_batch = (int)(max_ops - ops);
            } else if (t >= end) break;
            double s = t;
            transaction(&b, this_batch);
            t = now_s();
            ops += this_batch;
            if (n == cap) { cap *= 2; lat = realloc(lat, cap * sizeof *lat); }
            lat[n++] = (uint64_t)((t - s) * 1e6);
        }
        double elapsed = t - t0;
        qsort(lat, n, sizeof *lat, cmp_u64);
        uint64_t p50 = n ? lat[(size_t)((n - 1) * 0.50)] : 0;
        uint64_t p99 = n ? lat[(size_t)((n - 1) * 0.99)] : 0;
        uint64_t mx = n ? lat[n - 1] : 0;
        printf("{\"mode\":\"batch\",\"batch\":%d,\"ops\":%lld,\"commits\":%zu,\"seconds\":%.3f,"
               "\"ops_per_s\":%.1f,\"commits_per_s\":%.1f,\"commit_p50_us\":%llu,\"commit_p99_us\":%llu,"
               "\"commit_max_us\":%llu,\"sync\":\"%s\",\"clients\":%d,\"sqlite\":\"%s\"}\n",
               batch, ops, n, elapsed, elapsed > 0 ? ops / elapsed : 0, elapsed > 0 ? n / elapsed : 0,
               (unsigned long long)p50, (unsigned long long)p99, (unsigned long long)mx,
               sync_full ? "full" : "normal", clients, sqlite3_libversion());
        fflush(stdout);
        free(lat);
        close_bench(&b);
        if (!keep) remove_db(path);
    }
    free(list);
    return 0;
}
