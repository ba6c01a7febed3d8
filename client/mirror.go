package client

import (
	"context"
	"time"
)

// Mirror target names, for CreateInput.Mirror and MirrorSync.Target.
const (
	MirrorTargetAWS   = "aws"
	MirrorTargetAzure = "azure"
)

// Sync statuses of MirrorSync.
const (
	SyncPending       = "pending"
	SyncSynced        = "synced"
	SyncError         = "error"
	SyncDeletePending = "delete_pending"
)

// AWSMirror configures the AWS Secrets Manager mirror target (mirror/aws).
// SetMirrorAWS sends the fields that are not empty and keeps the stored
// values of the others.
type AWSMirror struct {
	// Region is the AWS region, e.g. eu-west-1 (required).
	Region string
	// Endpoint replaces the Secrets Manager endpoint (a VPC endpoint); https.
	Endpoint string
	// AccessKey and SecretKey are static credentials, both or neither;
	// neither means the AWS SDK's default credential chain.
	AccessKey string
	// SecretKey is the secret access key (secret; never returned).
	SecretKey Secret
	// SecretKeySet reports whether a secret key is stored (read only).
	SecretKeySet bool
	// RoleARN is a role to assume for the writes.
	RoleARN string
	// KMSKeyID is the KMS key of the secrets the target creates.
	KMSKeyID string
	// NameTemplate maps a credential name to a secret name; "<name>" is the
	// credential name. The engine's default is nebula/<name>.
	NameTemplate string
	// Tags are set on every secret; when not nil, they replace the stored
	// ones.
	Tags map[string]string
}

// AzureMirror configures the Azure Key Vault mirror target (mirror/azure).
// SetMirrorAzure sends the fields that are not empty and keeps the stored
// values of the others.
type AzureMirror struct {
	// VaultURL is the Key Vault URL, e.g. https://my-vault.vault.azure.net/
	// (required).
	VaultURL string
	// TenantID, ClientID and ClientSecret identify a service principal,
	// all three or none; none means azidentity's default credential.
	TenantID string
	ClientID string
	// ClientSecret is the service principal's secret (secret; never
	// returned).
	ClientSecret Secret
	// ClientSecretSet reports whether a client secret is stored (read
	// only).
	ClientSecretSet bool
	// NameTemplate maps a credential name to a secret name; the engine's
	// default is nebula-<name>.
	NameTemplate string
	// Tags are set on every secret version; when not nil, they replace the
	// stored ones.
	Tags map[string]string
}

// MirrorSync is one credential's sync state at one mirror target.
type MirrorSync struct {
	// Credential is the credential's name.
	Credential string
	// Target is aws or azure.
	Target string
	// Status is synced, pending, error or delete_pending.
	Status string
	// LastSyncedAt is when the target last took the credential; zero means
	// never.
	LastSyncedAt time.Time
	// LastError is the last failure; empty when the last attempt
	// succeeded.
	LastError string
}

// awsMirrorWire is the engine's mirror/aws response.
type awsMirrorWire struct {
	Region       string            `json:"region"`
	Endpoint     string            `json:"endpoint"`
	AccessKey    string            `json:"access_key"`
	SecretKeySet bool              `json:"secret_key_set"`
	RoleARN      string            `json:"role_arn"`
	KMSKeyID     string            `json:"kms_key_id"`
	NameTemplate string            `json:"name_template"`
	Tags         map[string]string `json:"tags"`
}

func (w *awsMirrorWire) mirror() *AWSMirror {
	return &AWSMirror{
		Region: w.Region, Endpoint: w.Endpoint, AccessKey: w.AccessKey, SecretKeySet: w.SecretKeySet,
		RoleARN: w.RoleARN, KMSKeyID: w.KMSKeyID, NameTemplate: w.NameTemplate, Tags: w.Tags,
	}
}

// azureMirrorWire is the engine's mirror/azure response.
type azureMirrorWire struct {
	VaultURL        string            `json:"vault_url"`
	TenantID        string            `json:"tenant_id"`
	ClientID        string            `json:"client_id"`
	ClientSecretSet bool              `json:"client_secret_set"`
	NameTemplate    string            `json:"name_template"`
	Tags            map[string]string `json:"tags"`
}

func (w *azureMirrorWire) mirror() *AzureMirror {
	return &AzureMirror{
		VaultURL: w.VaultURL, TenantID: w.TenantID, ClientID: w.ClientID, ClientSecretSet: w.ClientSecretSet,
		NameTemplate: w.NameTemplate, Tags: w.Tags,
	}
}

// MirrorAWS returns the AWS target's configuration without its secret
// key; ErrNotFound when it is not configured.
func (c *Client) MirrorAWS(ctx context.Context) (*AWSMirror, error) {
	var w awsMirrorWire
	if _, err := c.read(ctx, c.mount+"/mirror/aws", nil, &w); err != nil {
		return nil, err
	}
	return w.mirror(), nil
}

// SetMirrorAWS configures the AWS target and answers the stored
// configuration.
func (c *Client) SetMirrorAWS(ctx context.Context, m AWSMirror) (*AWSMirror, error) {
	body := map[string]any{}
	setString(body, "region", m.Region)
	setString(body, "endpoint", m.Endpoint)
	setString(body, "access_key", m.AccessKey)
	setString(body, "secret_key", m.SecretKey.Value())
	setString(body, "role_arn", m.RoleARN)
	setString(body, "kms_key_id", m.KMSKeyID)
	setString(body, "name_template", m.NameTemplate)
	if m.Tags != nil {
		body["tags"] = m.Tags
	}
	var w awsMirrorWire
	if _, err := c.write(ctx, replayable, c.mount+"/mirror/aws", body, &w); err != nil {
		return nil, err
	}
	return w.mirror(), nil
}

// DeleteMirrorAWS removes the AWS target's configuration; credentials that
// list aws are no longer copied there.
func (c *Client) DeleteMirrorAWS(ctx context.Context) error {
	return c.delete(ctx, c.mount+"/mirror/aws")
}

// MirrorAzure returns the Azure target's configuration without its client
// secret; ErrNotFound when it is not configured.
func (c *Client) MirrorAzure(ctx context.Context) (*AzureMirror, error) {
	var w azureMirrorWire
	if _, err := c.read(ctx, c.mount+"/mirror/azure", nil, &w); err != nil {
		return nil, err
	}
	return w.mirror(), nil
}

// SetMirrorAzure configures the Azure target and answers the stored
// configuration.
func (c *Client) SetMirrorAzure(ctx context.Context, m AzureMirror) (*AzureMirror, error) {
	body := map[string]any{}
	setString(body, "vault_url", m.VaultURL)
	setString(body, "tenant_id", m.TenantID)
	setString(body, "client_id", m.ClientID)
	setString(body, "client_secret", m.ClientSecret.Value())
	setString(body, "name_template", m.NameTemplate)
	if m.Tags != nil {
		body["tags"] = m.Tags
	}
	var w azureMirrorWire
	if _, err := c.write(ctx, replayable, c.mount+"/mirror/azure", body, &w); err != nil {
		return nil, err
	}
	return w.mirror(), nil
}

// DeleteMirrorAzure removes the Azure target's configuration.
func (c *Client) DeleteMirrorAzure(ctx context.Context) error {
	return c.delete(ctx, c.mount+"/mirror/azure")
}

// MirrorStatus lists every mirrored credential's sync state per target, in
// credential name order.
func (c *Client) MirrorStatus(ctx context.Context) ([]MirrorSync, error) {
	var w struct {
		Status []struct {
			Name         string    `json:"name"`
			Target       string    `json:"target"`
			SyncStatus   string    `json:"sync_status"`
			LastSyncedAt time.Time `json:"last_synced_at"`
			LastError    string    `json:"last_error"`
		} `json:"status"`
	}
	if _, err := c.read(ctx, c.mount+"/mirror/status", nil, &w); err != nil {
		return nil, err
	}
	out := make([]MirrorSync, 0, len(w.Status))
	for _, s := range w.Status {
		out = append(out, MirrorSync{Credential: s.Name, Target: s.Target, Status: s.SyncStatus, LastSyncedAt: s.LastSyncedAt, LastError: s.LastError})
	}
	return out, nil
}
