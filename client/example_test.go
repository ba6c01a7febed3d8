package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/nebula-credential/nebula-credential/client"
)

// Create an API key credential once, then read its ready-to-use token and
// put it on a request. The Vault address and token come from VAULT_ADDR
// and VAULT_TOKEN; the engine is mounted at nebula/.
func Example() {
	vc, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		log.Fatal(err)
	}
	c := client.New(vc) // client.WithMount("other") for another mount
	ctx := context.Background()

	_, err = c.Create(ctx, "payments-api", client.CreateInput{
		APIKey:      &client.APIKey{Key: client.NewSecret(os.Getenv("PAYMENTS_API_KEY")), ParamName: "X-Api-Key"},
		Description: "payments provider, production",
		Tags:        []string{"team:billing"},
		Metadata:    map[string]string{"owner": "billing@example.com"},
	})
	if err != nil {
		log.Fatal(err)
	}

	tok, err := c.GetToken(ctx, "payments-api", &client.CallerContext{WorkflowID: "nightly-invoices"})
	switch {
	case errors.Is(err, client.ErrNotFound):
		log.Fatal("no such credential")
	case errors.Is(err, client.ErrInteractionRequired):
		log.Fatal("a user must sign in first (StartFlow)")
	case err != nil:
		log.Fatal(err)
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://payments.example.com/v1/invoices", nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := tok.Apply(req); err != nil { // sets X-Api-Key
		log.Fatal(err)
	}
	fmt.Println(tok) // prints Value: [REDACTED], never the key
}

// A client from the environment (VAULT_ADDR, VAULT_TOKEN, VAULT_NAMESPACE,
// NEBULA_MOUNT) that makes up to three attempts of a request failing with
// unavailable, storage_error or a rate limit, waiting up to 200ms, then up
// to 400ms.
func ExampleNewFromEnv() {
	c, err := client.NewFromEnv(client.WithRetry(3, 200*time.Millisecond))
	if err != nil {
		log.Fatal(err)
	}
	tok, err := c.GetToken(context.Background(), "github", nil)
	var e *client.Error
	switch {
	case errors.As(err, &e) && e.Retryable():
		log.Fatalf("still failing after retries: %v", err)
	case err != nil:
		log.Fatal(err)
	}
	fmt.Println(tok.HeaderName)
}

// Import many credentials; the client sends them in requests of at most
// 100 items (and OpenBao's default 1,000 JSON strings) and answers one
// result per item, in order. An idempotency key per item (keys are unique
// in the mount) makes the import safe to run again, and lets WithRetry
// retry its requests.
func ExampleClient_BatchCreate() {
	c, err := client.NewFromEnv(client.WithBatchChunkSize(100))
	if err != nil {
		log.Fatal(err)
	}
	items := []client.BatchItem{
		{Name: "billing-api", CreateInput: client.CreateInput{APIKey: &client.APIKey{Key: client.NewSecret(os.Getenv("BILLING_KEY"))}, IdempotencyKey: "import-2026-12/billing-api"}},
		{Name: "crm-api", CreateInput: client.CreateInput{Bearer: &client.Bearer{Token: client.NewSecret(os.Getenv("CRM_TOKEN"))}, IdempotencyKey: "import-2026-12/crm-api"}},
	}
	results, err := c.BatchCreate(context.Background(), items)
	if err != nil {
		log.Fatalf("after %d results: %v", len(results), err)
	}
	for _, r := range results {
		if r.Err != nil {
			log.Printf("%s: %v", r.Name, r.Err)
		}
	}
}
