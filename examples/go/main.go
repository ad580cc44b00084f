// Command credits-example runs a whole credits.v1 flow with stock grpc-go and
// stubs generated from proto/ by protoc-gen-go and protoc-gen-go-grpc:
// tenant -> staff key -> credit package -> purchase -> spend -> a refused
// overspend (its google.rpc.ErrorInfo decoded) -> statement.
//
//	credits-example [-target HOST:PORT] [-admin-token-file FILE]
//
// The admin token is the one the server was started with (--admin-key-file).
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io/ioutil"
	"os"
	"sort"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	creditsv1 "credits.internal/gen/go/credits/v1"
)

func main() {
	target := flag.String("target", "127.0.0.1:50051", "server address")
	tokenFile := flag.String("admin-token-file", "data/admin.token", "file holding the admin token")
	flag.Parse()
	if err := run(*target, *tokenFile); err != nil {
		fmt.Fprintln(os.Stderr, "credits-example:", err)
		os.Exit(1)
	}
}

// call gives each call its bearer token and a 10 s deadline.
func call(token string) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), cancel
}

func run(target, tokenFile string) error {
	raw, err := ioutil.ReadFile(tokenFile)
	if err != nil {
		return fmt.Errorf("cannot read the admin token file: %v", err)
	}
	adminToken := strings.TrimSpace(string(raw))
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	runID := hex.EncodeToString(b) // makes ids and idempotency keys unique per run

	conn, err := grpc.Dial(target, grpc.WithInsecure())
	if err != nil {
		return err
	}
	defer conn.Close()
	admin := creditsv1.NewAdminServiceClient(conn)
	packages := creditsv1.NewCreditPackageServiceClient(conn)
	credit := creditsv1.NewCreditServiceClient(conn)

	// 1. A tenant and a staff key, with the admin token.
	ctx, cancel := call(adminToken)
	defer cancel()
	tenant, err := admin.CreateTenant(ctx, &creditsv1.CreateTenantRequest{
		TenantId: "gym-" + runID, Name: "Example Gym", Currency: "EUR"})
	if err != nil {
		return fmt.Errorf("CreateTenant: %v", err)
	}
	fmt.Printf("tenant     %s (%s)\n", tenant.Id, tenant.Currency)
	key, err := admin.CreateApiKey(ctx, &creditsv1.CreateApiKeyRequest{
		TenantId: tenant.Id, Role: creditsv1.Role_ROLE_STAFF, Label: "example"})
	if err != nil {
		return fmt.Errorf("CreateApiKey: %v", err)
	}
	fmt.Printf("key        %s (role STAFF; token printed once by the server, kept in memory here)\n", key.Key.Id)

	// Every later call carries the staff token.
	ctx, cancel = call(key.Token)
	defer cancel()

	// 2. A credit package, bought by a client.
	pkg, err := packages.CreateCreditPackage(ctx, &creditsv1.CreateCreditPackageRequest{
		Name: "Ten visits", CreditsMinor: 1000, PriceMinor: 900, ValidityDays: 365,
		IdempotencyKey: "pkg-" + runID})
	if err != nil {
		return fmt.Errorf("CreateCreditPackage: %v", err)
	}
	fmt.Printf("package    %s \"%s\": %d credits for %d\n", pkg.Id, pkg.Name, pkg.CreditsMinor, pkg.PriceMinor)
	bought, err := credit.PurchaseCreditPackage(ctx, &creditsv1.PurchaseCreditPackageRequest{
		ClientId: "alice", PackageId: pkg.Id, CenterId: "c1", PaymentRef: "pay-" + runID,
		IdempotencyKey: "buy-" + runID})
	if err != nil {
		return fmt.Errorf("PurchaseCreditPackage: %v", err)
	}
	fmt.Printf("purchase   lot %s: +%d, available %d\n", bought.Lot.Id, bought.Lot.AmountMinor, bought.Balance.AvailableMinor)

	// 3. A spend within the balance.
	spent, err := credit.SpendCredits(ctx, &creditsv1.SpendCreditsRequest{
		ClientId: "alice", AmountMinor: 300, CenterId: "c1", Reason: creditsv1.SpendReason_SPEND_REASON_SERVICE,
		IdempotencyKey: "spend-" + runID})
	if err != nil {
		return fmt.Errorf("SpendCredits: %v", err)
	}
	fmt.Printf("spend      %s: -300, available %d\n", spent.Spend.Id, spent.Balance.AvailableMinor)

	// 4. A spend beyond it: refused, nothing applied; the reason is in the
	//    google.rpc.Status details (grpc-status-details-bin).
	_, err = credit.SpendCredits(ctx, &creditsv1.SpendCreditsRequest{
		ClientId: "alice", AmountMinor: 5000, CenterId: "c1", Reason: creditsv1.SpendReason_SPEND_REASON_SERVICE,
		IdempotencyKey: "overspend-" + runID})
	if err == nil {
		return fmt.Errorf("the overspend was accepted: expected a refusal")
	}
	st := status.Convert(err)
	var info *errdetails.ErrorInfo
	for _, d := range st.Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok {
			info = i
		}
	}
	if info == nil {
		return fmt.Errorf("the overspend was refused without ErrorInfo: %v", err)
	}
	keys := make([]string, 0, len(info.Metadata))
	for k := range info.Metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var meta []string
	for _, k := range keys {
		meta = append(meta, k+"="+info.Metadata[k])
	}
	fmt.Printf("overspend  refused: %s reason=%s domain=%s %s\n", codeName(st.Code().String()), info.Reason, info.Domain, strings.Join(meta, " "))
	fmt.Printf("           message: %s\n", st.Message())

	// 5. The statement, oldest first, following page tokens.
	fmt.Println("statement")
	token := ""
	for {
		page, err := credit.ListLedgerEntries(ctx, &creditsv1.ListLedgerEntriesRequest{
			ClientId: "alice", OldestFirst: true, PageToken: token})
		if err != nil {
			return fmt.Errorf("ListLedgerEntries: %v", err)
		}
		for _, e := range page.Entries {
			kind := strings.TrimPrefix(e.Type.String(), "ENTRY_TYPE_")
			fmt.Printf("  seq %-3d %-9s %6d  available after %d\n", e.Seq, kind, e.AmountMinor, e.AvailableAfterMinor)
		}
		token = page.NextPageToken
		if token == "" {
			break
		}
	}
	return nil
}

// codeName turns grpc-go's "FailedPrecondition" into the canonical "FAILED_PRECONDITION".
func codeName(s string) string {
	var out strings.Builder
	for i, r := range s {
		if i > 0 && r >= 'A' && r <= 'Z' {
			out.WriteByte('_')
		}
		out.WriteRune(r)
	}
	return strings.ToUpper(out.String())
}
