package nebula

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/nebula-credential/nebula-credential/internal/upstream"
	"github.com/nebula-credential/nebula-credential/mirror"
)

func pathMirror(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern:      "mirror/aws$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationSuffix: "mirror-aws"},
			Fields: map[string]*framework.FieldSchema{
				"region":        {Type: framework.TypeString, Description: "AWS region, e.g. eu-west-1 (required)."},
				"endpoint":      {Type: framework.TypeString, Description: "Secrets Manager endpoint override (VPC endpoint); https."},
				"access_key":    {Type: framework.TypeString, Description: "Access key id; with secret_key. Empty: the SDK's default credential chain."},
				"secret_key":    {Type: framework.TypeString, Description: "Secret access key. Secret: never returned."},
				"role_arn":      {Type: framework.TypeString, Description: "Role to assume for the writes."},
				"kms_key_id":    {Type: framework.TypeString, Description: "KMS key for secrets the target creates."},
				"name_template": {Type: framework.TypeString, Description: "Secret name; <name> is the credential name. Default nebula/<name>."},
				"tags":          {Type: framework.TypeKVPairs, Description: "Tags set on every secret."},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation:   &framework.PathOperation{Callback: b.pathMirrorRead(mirror.NameAWS), Responses: mirrorAWSResponses},
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathMirrorAWSWrite, Responses: mirrorAWSResponses},
				logical.DeleteOperation: &framework.PathOperation{Callback: b.pathMirrorDelete(mirror.NameAWS), Responses: respNoContent},
			},
			HelpSynopsis:    "Configure mirroring to AWS Secrets Manager.",
			HelpDescription: "Credentials that list aws in their mirror field are copied to Secrets Manager after every change. See the README for the IAM permissions.",
		},
		{
			Pattern:      "mirror/azure$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationSuffix: "mirror-azure"},
			Fields: map[string]*framework.FieldSchema{
				"vault_url":     {Type: framework.TypeString, Description: "Key Vault URL, e.g. https://my-vault.vault.azure.net/ (required)."},
				"tenant_id":     {Type: framework.TypeString, Description: "Entra tenant of the service principal."},
				"client_id":     {Type: framework.TypeString, Description: "Service principal client id."},
				"client_secret": {Type: framework.TypeString, Description: "Service principal secret. Secret: never returned."},
				"name_template": {Type: framework.TypeString, Description: "Secret name; <name> is the credential name. Default nebula-<name>."},
				"tags":          {Type: framework.TypeKVPairs, Description: "Tags set on every secret."},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation:   &framework.PathOperation{Callback: b.pathMirrorRead(mirror.NameAzure), Responses: mirrorAzureResponses},
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathMirrorAzureWrite, Responses: mirrorAzureResponses},
				logical.DeleteOperation: &framework.PathOperation{Callback: b.pathMirrorDelete(mirror.NameAzure), Responses: respNoContent},
			},
			HelpSynopsis:    "Configure mirroring to Azure Key Vault.",
			HelpDescription: "Credentials that list azure in their mirror field are copied to Key Vault after every change. See the README for the roles the principal needs.",
		},
		{
			Pattern:      "mirror/status$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationSuffix: "mirror-status"},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{Callback: b.pathMirrorStatus, Responses: mirrorStatusResponses},
			},
			HelpSynopsis:    "Show each mirrored credential's sync status.",
			HelpDescription: "status lists, per credential and target, sync_status (synced, pending, error, delete_pending), last_synced_at and last_error.",
		},
	}
}

func (b *backend) pathMirrorRead(name string) framework.OperationFunc {
	return func(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
		cfg, err := loadTargetConfig(ctx, req.Storage, name)
		if err != nil {
			return nil, err
		}
		if cfg == nil {
			return nil, newError(KindNotFound, "mirror target %s is not configured", name)
		}
		return &logical.Response{Data: cfg.responseData()}, nil
	}
}

// responseData shows a target config without its secrets.
func (c *targetConfig) responseData() map[string]any {
	if a := c.AWS; a != nil {
		return map[string]any{
			"region": a.Region, "endpoint": a.Endpoint, "access_key": a.AccessKey, "secret_key_set": a.SecretKey != "",
			"role_arn": a.RoleARN, "kms_key_id": a.KMSKeyID, "name_template": a.NameTemplate, "tags": nonNilMap(a.Tags),
		}
	}
	z := c.Azure
	return map[string]any{
		"vault_url": z.VaultURL, "tenant_id": z.TenantID, "client_id": z.ClientID, "client_secret_set": z.ClientSecret != "",
		"name_template": z.NameTemplate, "tags": nonNilMap(z.Tags),
	}
}

func stringField(d *framework.FieldData, name string, dst *string) {
	if v, ok := d.GetOk(name); ok {
		*dst = v.(string)
	}
}

func (b *backend) pathMirrorAWSWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	cfg, err := loadTargetConfig(ctx, req.Storage, mirror.NameAWS)
	if err != nil {
		return nil, err
	}
	a := mirror.AWSConfig{}
	if cfg != nil && cfg.AWS != nil {
		a = *cfg.AWS
	}
	for field, dst := range map[string]*string{
		"region": &a.Region, "endpoint": &a.Endpoint, "access_key": &a.AccessKey, "secret_key": &a.SecretKey,
		"role_arn": &a.RoleARN, "kms_key_id": &a.KMSKeyID, "name_template": &a.NameTemplate,
	} {
		stringField(d, field, dst)
	}
	if v, ok := d.GetOk("tags"); ok {
		a.Tags = v.(map[string]string)
	}
	policyErr, err := b.checkTargetURL(ctx, req.Storage, "endpoint", a.Endpoint)
	if err != nil {
		return nil, err
	}
	if err := errors.Join(a.Validate(), policyErr); err != nil {
		return nil, invalidInput(err)
	}
	return b.saveTarget(ctx, req, mirror.NameAWS, &targetConfig{AWS: &a})
}

func (b *backend) pathMirrorAzureWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	cfg, err := loadTargetConfig(ctx, req.Storage, mirror.NameAzure)
	if err != nil {
		return nil, err
	}
	z := mirror.AzureConfig{}
	if cfg != nil && cfg.Azure != nil {
		z = *cfg.Azure
	}
	for field, dst := range map[string]*string{
		"vault_url": &z.VaultURL, "tenant_id": &z.TenantID, "client_id": &z.ClientID,
		"client_secret": &z.ClientSecret, "name_template": &z.NameTemplate,
	} {
		stringField(d, field, dst)
	}
	if v, ok := d.GetOk("tags"); ok {
		z.Tags = v.(map[string]string)
	}
	policyErr, err := b.checkTargetURL(ctx, req.Storage, "vault_url", z.VaultURL)
	if err != nil {
		return nil, err
	}
	if err := errors.Join(z.Validate(), policyErr); err != nil {
		return nil, invalidInput(err)
	}
	return b.saveTarget(ctx, req, mirror.NameAzure, &targetConfig{Azure: &z})
}

// checkTargetURL checks a target's URL field against the host policy when
// it is written (the transport checks every request again). It returns the
// policy's objection, if any, and an error when the config cannot be read.
func (b *backend) checkTargetURL(ctx context.Context, s logical.Storage, field, raw string) (policyErr, err error) {
	if raw == "" {
		return nil, nil
	}
	cfg, err := b.getConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	if err := upstream.CheckURL(cfg.HostAllowed, raw); err != nil {
		return fmt.Errorf("field %q: %w", field, err), nil
	}
	return nil, nil
}

func (b *backend) saveTarget(ctx context.Context, req *logical.Request, name string, cfg *targetConfig) (*logical.Response, error) {
	entry, err := jsonEntry(mirrorCfgPrefix+name, cfg, true)
	if err != nil {
		return nil, err
	}
	if err := req.Storage.Put(ctx, entry); err != nil {
		return nil, storageError("writing mirror target", err)
	}
	b.mirrors.reset()
	b.audit(ctx, req, auditEvent{Action: "mirror_config", Success: true}, nil)
	return &logical.Response{Data: cfg.responseData()}, nil
}

func (b *backend) pathMirrorDelete(name string) framework.OperationFunc {
	return func(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
		if err := req.Storage.Delete(ctx, mirrorCfgPrefix+name); err != nil {
			return nil, storageError("deleting mirror target", err)
		}
		b.mirrors.reset()
		return nil, nil
	}
}

func (b *backend) pathMirrorStatus(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	list := []map[string]any{}
	err := b.eachMirrorState(ctx, req.Storage, func(name, target string, st *mirrorState) {
		list = append(list, map[string]any{
			"name": name, "target": target, "sync_status": st.SyncStatus,
			"last_synced_at": formatTime(st.LastSyncedAt), "last_error": st.LastError,
		})
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(list, func(i, j int) bool {
		a, b := list[i], list[j]
		return a["name"].(string)+"/"+a["target"].(string) < b["name"].(string)+"/"+b["target"].(string)
	})
	return &logical.Response{Data: map[string]any{"status": list}}, nil
}
