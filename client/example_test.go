package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"

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
