package mirror

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// AzureConfig configures the Azure Key Vault target (engine path
// mirror/azure). Field comments name the path's fields.
type AzureConfig struct {
	// VaultURL is the vault's URL (vault_url), e.g.
	// "https://my-vault.vault.azure.net/". Required; https only.
	VaultURL string
	// TenantID, ClientID and ClientSecret identify a service principal
	// (tenant_id, client_id, client_secret): all three or none. None means
	// azidentity's DefaultAzureCredential (environment, workload identity,
	// managed identity, Azure CLI), in TenantID when that alone is set.
	TenantID     string
	ClientID     string
	ClientSecret string
	// NameTemplate maps a credential name to a secret name (name_template);
	// it must contain "<name>" once, which is replaced by
	// AzureSecretName(credential). Empty means DefaultAzureNameTemplate.
	NameTemplate string
	// Tags are set on every secret version (tags), besides the engine's own
	// "nebula-credential" and "nebula-version".
	Tags map[string]string
}

var (
	azureGUIDRegexp   = regexp.MustCompile(`^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$`)
	azureDomainRegexp = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)+$`)
)

// Key Vault tag limits: 15 tags per secret, of which the engine sets 2.
const (
	azureMaxUserTags = 13
	azureMaxTagKey   = 512
	azureMaxTagValue = 256
)

// Validate reports every problem of c at once, naming the fields as the
// engine's mirror/azure path does. It never includes client_secret.
func (c AzureConfig) Validate() error {
	var errs []error
	if c.VaultURL == "" {
		errs = append(errs, errors.New("vault_url is required"))
	} else if err := validateVaultURL(c.VaultURL); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.validateCredentials()...)
	if c.NameTemplate != "" {
		if err := validateTemplate(c.NameTemplate, azureNameChar, azureMaxNameLen); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, validateAzureTags(c.Tags)...)
	return errors.Join(errs...)
}

func validateVaultURL(raw string) error {
	if err := validateEndpoint("vault_url", raw, false); err != nil {
		return err
	}
	u, _ := url.Parse(raw) // parsed by validateEndpoint
	if u.Path != "" && u.Path != "/" {
		return fmt.Errorf("vault_url %q must not have a path", u.Redacted())
	}
	return nil
}

func (c AzureConfig) validateCredentials() []error {
	var errs []error
	if c.ClientID != "" || c.ClientSecret != "" {
		if c.TenantID == "" {
			errs = append(errs, errors.New("tenant_id is required with client_id and client_secret"))
		}
		if c.ClientID == "" {
			errs = append(errs, errors.New("client_id is required with client_secret"))
		}
		if c.ClientSecret == "" {
			errs = append(errs, errors.New("client_secret is required with client_id"))
		}
	}
	if c.TenantID != "" && !azureGUIDRegexp.MatchString(c.TenantID) && !azureDomainRegexp.MatchString(c.TenantID) {
		errs = append(errs, fmt.Errorf("tenant_id %q must be a GUID or a domain name", c.TenantID))
	}
	if c.ClientID != "" && !azureGUIDRegexp.MatchString(c.ClientID) {
		errs = append(errs, fmt.Errorf("client_id %q must be a GUID", c.ClientID))
	}
	return errs
}

func validateAzureTags(tags map[string]string) []error {
	var errs []error
	if len(tags) > azureMaxUserTags {
		errs = append(errs, fmt.Errorf("tags has %d entries; at most %d are allowed", len(tags), azureMaxUserTags))
	}
	for _, k := range sortedKeys(tags) {
		switch {
		case k == "" || len(k) > azureMaxTagKey:
			errs = append(errs, fmt.Errorf("tags key %q must have 1 to %d characters", k, azureMaxTagKey))
		case strings.HasPrefix(strings.ToLower(k), "nebula-"):
			errs = append(errs, fmt.Errorf("tags key %q uses the prefix nebula-, reserved for the engine", k))
		}
		if len(tags[k]) > azureMaxTagValue {
			errs = append(errs, fmt.Errorf("tags value of %q must have at most %d characters", k, azureMaxTagValue))
		}
	}
	return errs
}
