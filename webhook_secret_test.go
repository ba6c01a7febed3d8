package nebula

import (
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"
)

func TestWebhookSecretHasAFloor(t *testing.T) {
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/k", validCreds["api_key"])
	const url = "https://hooks.example.com/rotate"
	for _, secret := range []string{"", "x", "fifteen-chars!!"} {
		_, err := e.request(t, logical.UpdateOperation, "creds/k/rotation", map[string]any{"webhook_url": url, "webhook_secret": secret})
		requireKind(t, err, KindInvalidInput, "webhook_secret", "16")
		if secret != "" {
			require.NotContains(t, err.Error(), secret)
		}
		entry, err := e.storage.Get(t.Context(), webhookStorageKey("k"))
		require.NoError(t, err)
		require.Nil(t, entry, "a refused secret is not stored")
	}
	e.mustRequest(t, logical.UpdateOperation, "creds/k/rotation", map[string]any{"webhook_url": url, "webhook_secret": "sixteen-chars!!!"})

	// Replacing the secret later needs the floor too, and an empty one is
	// refused while the policy has a webhook_url.
	for _, secret := range []string{"", "short"} {
		_, err := e.request(t, logical.UpdateOperation, "creds/k/rotation", map[string]any{"webhook_secret": secret})
		requireKind(t, err, KindInvalidInput, "webhook_secret")
	}
	var ws webhookSecret
	entry, err := e.storage.Get(t.Context(), webhookStorageKey("k"))
	require.NoError(t, err)
	require.NoError(t, entry.DecodeJSON(&ws))
	require.Equal(t, "sixteen-chars!!!", ws.Secret)
}

func TestStoredShortWebhookSecretMustBeReplaced(t *testing.T) {
	// A secret stored before the floor was enforced is refused on the next
	// policy write until a long enough one is supplied.
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/k", validCreds["api_key"])
	e.mustRequest(t, logical.UpdateOperation, "creds/k/rotation", map[string]any{"webhook_url": "https://hooks.example.com/rotate", "webhook_secret": "sixteen-chars!!!"})
	entry, err := jsonEntry(webhookStorageKey("k"), &webhookSecret{Secret: ""}, true)
	require.NoError(t, err)
	require.NoError(t, e.storage.Put(t.Context(), entry))

	_, err = e.request(t, logical.UpdateOperation, "creds/k/rotation", map[string]any{"interval": "1h"})
	requireKind(t, err, KindInvalidInput, "webhook_secret", "16")
	e.mustRequest(t, logical.UpdateOperation, "creds/k/rotation", map[string]any{"interval": "1h", "webhook_secret": "another-16-chars"})
}

func TestWebhookURLChangeNeedsTheWebhookSecret(t *testing.T) {
	// Requests signed with the stored secret must not go to a new address
	// (they could be replayed to the real webhook, which answers new secret
	// values).
	e := newTestBackend(t)
	e.mustRequest(t, logical.CreateOperation, "creds/k", validCreds["api_key"])
	e.mustRequest(t, logical.UpdateOperation, "creds/k/rotation", map[string]any{"webhook_url": "https://hooks.example.com/rotate", "webhook_secret": "sixteen-chars!!!"})
	_, err := e.request(t, logical.UpdateOperation, "creds/k/rotation", map[string]any{"webhook_url": "https://elsewhere.example.net/rotate"})
	requireKind(t, err, KindInvalidInput, "webhook_secret", "webhook_url")
	e.mustRequest(t, logical.UpdateOperation, "creds/k/rotation", map[string]any{"webhook_url": "https://hooks.example.com/rotate", "interval": "1h"})
	e.mustRequest(t, logical.UpdateOperation, "creds/k/rotation", map[string]any{"webhook_url": "https://elsewhere.example.net/rotate", "webhook_secret": "another-16-chars"})
}
