package mirror

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAzureSecretName(t *testing.T) {
	tests := []struct {
		credential string
		want       string // "" = mapped with a hash suffix, checked by prefix
		prefix     string
	}{
		{credential: "api-key", want: "api-key"},
		{credential: "a1-b2", want: "a1-b2"},
		{credential: "api_key", prefix: "api-key-"},
		{credential: "api.key", prefix: "api-key-"},
		{credential: "ApiKey", prefix: "ApiKey-"},
		{credential: "naïve", prefix: "na-ve-"},
		{credential: "v-20240101", prefix: "v-20240101-"},
		{credential: "api-key-" + AzureSecretName("api_key")[8:], prefix: "api-key-" + AzureSecretName("api_key")[8:] + "-"},
	}
	for _, tc := range tests {
		t.Run(tc.credential, func(t *testing.T) {
			got := AzureSecretName(tc.credential)
			if tc.want != "" {
				assert.Equal(t, tc.want, got)
				return
			}
			assert.True(t, strings.HasPrefix(got, tc.prefix), got)
			assert.Len(t, got, len(tc.prefix)+8)
			assert.Equal(t, got, AzureSecretName(tc.credential), "deterministic")
		})
	}
	// Names that map to the same characters stay apart, also for Key
	// Vault's case-insensitive comparison.
	seen := map[string]string{}
	for _, c := range []string{"a-b", "a_b", "a.b", "A-B", "A_B", AzureSecretName("a_b")} {
		n := strings.ToLower(AzureSecretName(c))
		require.NotContains(t, seen, n, "%s and %s collide", c, seen[n])
		seen[n] = c
	}
}

func TestRenderNames(t *testing.T) {
	name, err := renderAWSName(DefaultAWSNameTemplate, "svc_token.v2")
	require.NoError(t, err)
	assert.Equal(t, "nebula/svc_token.v2", name)
	_, err = renderAWSName(DefaultAWSNameTemplate, "")
	assert.Error(t, err)
	_, err = renderAWSName(DefaultAWSNameTemplate, "a b")
	assert.Error(t, err)

	name, err = renderAzureName(DefaultAzureNameTemplate, "svc-token")
	require.NoError(t, err)
	assert.Equal(t, "nebula-svc-token", name)
	_, err = renderAzureName(DefaultAzureNameTemplate, strings.Repeat("x", 121))
	assert.Error(t, err)
	_, err = renderAzureName(DefaultAzureNameTemplate, strings.Repeat("x", 120))
	assert.NoError(t, err)
}

// FuzzAzureSecretName checks that every credential name maps to a valid
// Key Vault name part, deterministically, and that names equal ignoring
// case map to names equal ignoring case only when the credentials are equal.
func FuzzAzureSecretName(f *testing.F) {
	for _, seed := range []string{"api-key", "api_key", "API_KEY", "a.b-c", "ü", ""} {
		f.Add(seed, strings.ToUpper(seed))
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		na, nb := AzureSecretName(a), AzureSecretName(b)
		for _, r := range na {
			if !azureNameChar(r) {
				t.Fatalf("AzureSecretName(%q) = %q has %q", a, na, r)
			}
		}
		if na != AzureSecretName(a) {
			t.Fatalf("AzureSecretName(%q) is not deterministic", a)
		}
		// Distinct names share a secret only on a collision of the 32-bit
		// SHA-256 prefix, which the fuzzer will not find.
		if a != b && strings.EqualFold(na, nb) {
			t.Fatalf("%q and %q both map to %q", a, b, na)
		}
	})
}
