package mirror

import (
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// A tenant and client ID of the right form.
const (
	testTenant   = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	testClientID = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
)

// checkValidation asserts err is nil when want is empty, else that it
// mentions every string of want and none of secret.
func checkValidation(t *testing.T, err error, want []string, secret string) {
	t.Helper()
	if len(want) == 0 {
		assert.NoError(t, err)
		return
	}
	if !assert.Error(t, err) {
		return
	}
	for _, w := range want {
		assert.Contains(t, err.Error(), w)
	}
	if secret != "" {
		assert.NotContains(t, err.Error(), secret)
	}
}

func manyTags(n int) map[string]string {
	tags := map[string]string{}
	for i := 0; i < n; i++ {
		tags["k"+strconv.Itoa(i)] = "v"
	}
	return tags
}

func TestAWSConfigValidate(t *testing.T) {
	const secretKey = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	valid := AWSConfig{Region: "us-east-1"}
	tests := []struct {
		name   string
		mutate func(*AWSConfig)
		want   []string
	}{
		{"minimal", func(*AWSConfig) {}, nil},
		{"full", func(c *AWSConfig) {
			c.Region = "us-gov-west-1"
			c.Endpoint = "https://vpce-123.secretsmanager.us-gov-west-1.vpce.amazonaws.com"
			c.STSEndpoint = "https://sts.us-gov-west-1.amazonaws.com"
			c.AccessKey, c.SecretKey = "AKIAIOSFODNN7EXAMPLE", secretKey
			c.RoleARN = "arn:aws-us-gov:iam::123456789012:role/path/nebula-mirror"
			c.KMSKeyID = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
			c.NameTemplate = "teams/a+b=c.d@e-f_g/<name>"
			c.Tags = map[string]string{"team": "pay ments", "cost:center": "4/2"}
			c.RecoveryWindowDays = 30
		}, nil},
		{"loopback http endpoint", func(c *AWSConfig) { c.Endpoint = "http://127.0.0.1:4566" }, nil},
		{"localhost http endpoint", func(c *AWSConfig) { c.Endpoint = "http://localhost:4566/" }, nil},
		{"missing region", func(c *AWSConfig) { c.Region = "" }, []string{"region is required"}},
		{"bad region", func(c *AWSConfig) { c.Region = "Europe" }, []string{`region "Europe"`}},
		{"relative endpoint", func(c *AWSConfig) { c.Endpoint = "secretsmanager.local" }, []string{"endpoint", "absolute https URL"}},
		{"unparsable endpoint", func(c *AWSConfig) { c.Endpoint = "https://%zz" }, []string{"endpoint is not a valid URL"}},
		{"plain http endpoint", func(c *AWSConfig) { c.Endpoint = "http://secrets.example.com" }, []string{"endpoint", "must use https"}},
		{"endpoint with query", func(c *AWSConfig) { c.Endpoint = "https://x.example.com/?a=b" }, []string{"query"}},
		{"endpoint with password", func(c *AWSConfig) { c.Endpoint = "https://u:hunter2@x.example.com" }, []string{"user information"}},
		{"sts endpoint", func(c *AWSConfig) { c.STSEndpoint = "ftp://sts" }, []string{"sts_endpoint"}},
		{"access key alone", func(c *AWSConfig) { c.AccessKey = "AKIA" }, []string{"secret_key is required with access_key"}},
		{"secret key alone", func(c *AWSConfig) { c.SecretKey = secretKey }, []string{"access_key is required with secret_key"}},
		{"secret key with space", func(c *AWSConfig) { c.AccessKey, c.SecretKey = "AKIA", secretKey+" " }, []string{"secret_key must not contain spaces"}},
		{"bad role", func(c *AWSConfig) { c.RoleARN = "nebula-mirror" }, []string{"role_arn"}},
		{"user arn", func(c *AWSConfig) { c.RoleARN = "arn:aws:iam::123456789012:user/bob" }, []string{"role_arn"}},
		{"kms with space", func(c *AWSConfig) { c.KMSKeyID = "alias/my key" }, []string{"kms_key_id"}},
		{"template without name", func(c *AWSConfig) { c.NameTemplate = "nebula/static" }, []string{"name_template", "<name>"}},
		{"template name twice", func(c *AWSConfig) { c.NameTemplate = "<name>/<name>" }, []string{"exactly once"}},
		{"template bad character", func(c *AWSConfig) { c.NameTemplate = "nebula:<name>" }, []string{"name_template", "':'"}},
		{"template too long", func(c *AWSConfig) { c.NameTemplate = strings.Repeat("a", 512) + "<name>" }, []string{"no room"}},
		{"reserved aws tag", func(c *AWSConfig) { c.Tags = map[string]string{"AWS:team": "x"} }, []string{"reserved prefix aws:"}},
		{"reserved engine tag", func(c *AWSConfig) { c.Tags = map[string]string{AWSTagVersion: "9"} }, []string{"nebula:"}},
		{"empty tag key", func(c *AWSConfig) { c.Tags = map[string]string{"": "x"} }, []string{"tags key"}},
		{"bad tag value", func(c *AWSConfig) { c.Tags = map[string]string{"k": "a*b"} }, []string{`tags value of "k"`}},
		{"too many tags", func(c *AWSConfig) { c.Tags = manyTags(49) }, []string{"at most 48"}},
		{"recovery window", func(c *AWSConfig) { c.RecoveryWindowDays = 31 }, []string{"recovery_window_days"}},
		{"every problem at once", func(c *AWSConfig) {
			c.Region, c.Endpoint, c.SecretKey, c.NameTemplate = "", "ftp://x", secretKey, "x"
		}, []string{"region", "endpoint", "access_key", "name_template"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := valid
			tc.mutate(&cfg)
			checkValidation(t, cfg.Validate(), tc.want, secretKey)
		})
	}
}

func TestAzureConfigValidate(t *testing.T) {
	const clientSecret = "Q~client.secret_value-1234"
	valid := AzureConfig{VaultURL: "https://my-vault.vault.azure.net/"}
	tests := []struct {
		name   string
		mutate func(*AzureConfig)
		want   []string
	}{
		{"minimal", func(*AzureConfig) {}, nil},
		{"service principal", func(c *AzureConfig) {
			c.TenantID, c.ClientID, c.ClientSecret = testTenant, testClientID, clientSecret
			c.NameTemplate = "prod-<name>-v1"
			c.Tags = map[string]string{"team": "payments", "cost center": "42"}
		}, nil},
		{"tenant domain alone", func(c *AzureConfig) { c.TenantID = "contoso.onmicrosoft.com" }, nil},
		{"sovereign cloud", func(c *AzureConfig) { c.VaultURL = "https://v.vault.azure.cn" }, nil},
		{"missing url", func(c *AzureConfig) { c.VaultURL = "" }, []string{"vault_url is required"}},
		{"http url", func(c *AzureConfig) { c.VaultURL = "http://my-vault.vault.azure.net" }, []string{"vault_url", "must use https"}},
		{"http loopback url", func(c *AzureConfig) { c.VaultURL = "http://127.0.0.1:8443" }, []string{"vault_url", "must use https"}},
		{"url with path", func(c *AzureConfig) { c.VaultURL = "https://v.vault.azure.net/secrets" }, []string{"must not have a path"}},
		{"relative url", func(c *AzureConfig) { c.VaultURL = "my-vault" }, []string{"absolute https URL"}},
		{"secret without ids", func(c *AzureConfig) { c.ClientSecret = clientSecret },
			[]string{"tenant_id is required", "client_id is required"}},
		{"client id without secret", func(c *AzureConfig) { c.TenantID, c.ClientID = testTenant, testClientID },
			[]string{"client_secret is required"}},
		{"bad client id", func(c *AzureConfig) { c.TenantID, c.ClientID, c.ClientSecret = testTenant, "my-app", clientSecret },
			[]string{`client_id "my-app" must be a GUID`}},
		{"bad tenant", func(c *AzureConfig) { c.TenantID = "not a tenant" }, []string{"tenant_id"}},
		{"template without name", func(c *AzureConfig) { c.NameTemplate = "nebula" }, []string{"<name>"}},
		{"template underscore", func(c *AzureConfig) { c.NameTemplate = "nebula_<name>" }, []string{"'_'"}},
		{"template slash", func(c *AzureConfig) { c.NameTemplate = "nebula/<name>" }, []string{"'/'"}},
		{"template too long", func(c *AzureConfig) { c.NameTemplate = strings.Repeat("a", 127) + "<name>" }, []string{"no room"}},
		{"reserved tag", func(c *AzureConfig) { c.Tags = map[string]string{"Nebula-Version": "1"} }, []string{"reserved"}},
		{"long tag value", func(c *AzureConfig) { c.Tags = map[string]string{"k": strings.Repeat("v", 257)} }, []string{"at most 256"}},
		{"too many tags", func(c *AzureConfig) { c.Tags = manyTags(14) }, []string{"at most 13"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := valid
			tc.mutate(&cfg)
			checkValidation(t, cfg.Validate(), tc.want, clientSecret)
		})
	}
}
