package nebula

import (
	"net/http"

	"github.com/hashicorp/vault/sdk/framework"

	"github.com/nebula-credential/nebula-credential/types"
)

// Response schemas of the engine's operations: the Responses of each
// framework.PathOperation, published in Vault's OpenAPI document
// (sys/internal/specs/openapi) and checked in strict mode against every
// answer the unit tests see (testEnv.request in backend_test.go).
//
// Adding a field to an answer: add it to the schema here, in the same
// change. A field a handler answers but no schema declares fails the
// suite; so does a Required one a handler leaves out. Mark a field Required
// when every answer of the operation has it (null included), optional when
// only some answers do. Fields are top level only: the shape of nested
// objects (list items, maps) is written in the field's description.
//
// Field types follow the JSON an answer carries, as the framework decodes
// it: whole numbers TypeInt (TypeInt64 for counters and seconds), fractions
// TypeFloat, RFC 3339 times (or null) TypeTime, string lists
// TypeStringSlice, lists of objects TypeSlice, objects TypeMap, string to
// string maps TypeKVPairs.

// respOK is the 200 answer of an operation, with its fields.
func respOK(description string, fields map[string]*framework.FieldSchema) map[int][]framework.Response {
	return map[int][]framework.Response{http.StatusOK: {{Description: description, Fields: fields}}}
}

// respNoContent is the answer of an operation that returns no data.
var respNoContent = map[int][]framework.Response{
	http.StatusNoContent: {{Description: "No content: the operation succeeded."}},
}

// always is a response field every answer of the operation has.
func always(t framework.FieldType, description string) *framework.FieldSchema {
	return &framework.FieldSchema{Type: t, Description: description, Required: true}
}

// sometimes is a response field only some answers have.
func sometimes(t framework.FieldType, description string) *framework.FieldSchema {
	return &framework.FieldSchema{Type: t, Description: description}
}

// listResponses is the answer of a list operation; keys is absent when the
// list is empty (logical.ListResponse).
func listResponses(what string) map[int][]framework.Response {
	return respOK("The "+what+".", map[string]*framework.FieldSchema{
		"keys": sometimes(framework.TypeStringSlice, "The "+what+"; absent when there are none."),
	})
}

// configResponses answers config reads and writes (Config.responseData).
var configResponses = respOK("The engine's configuration.", map[string]*framework.FieldSchema{
	"cache_enabled":                 always(framework.TypeBool, "Whether tokens are cached in memory."),
	"cache_ttl":                     always(framework.TypeInt64, "Longest time a token stays cached, in seconds."),
	"cache_max_size":                always(framework.TypeInt, "Most tokens kept in the cache."),
	"refresh_ahead":                 always(framework.TypeInt64, "How long before expiry a token is refreshed, in seconds."),
	"allowed_hosts":                 always(framework.TypeStringSlice, "Upstream hosts credentials may call; empty means any public host."),
	"insecure_http_hosts":           always(framework.TypeStringSlice, "Hosts that may be called over plain http."),
	"allow_private_networks":        always(framework.TypeBool, "Whether hosts that are not listed may resolve to private addresses."),
	"audit_enabled":                 always(framework.TypeBool, "Whether the engine keeps its audit trail."),
	"audit_retention":               always(framework.TypeInt64, "How long audit events are kept, in seconds."),
	"audit_sync":                    always(framework.TypeBool, "Whether audit events are written on the request path."),
	"flow_ttl":                      always(framework.TypeInt64, "How long an interactive OAuth flow stays open, in seconds."),
	"default_token_lifetime":        always(framework.TypeInt64, "Lifetime assumed for tokens whose issuer omits expires_in, in seconds."),
	"refresh_concurrency":           always(framework.TypeInt, "Most token refreshes the background refresh runs at once."),
	"upstream_concurrency_per_host": always(framework.TypeInt, "Most concurrent requests to one upstream host."),
	"notify_url":                    always(framework.TypeString, "Where notification events are POSTed; empty when off."),
	"notify_secret_set":             always(framework.TypeBool, "Whether a notify_secret is stored (it is never returned)."),
	"standby_token_reads":           always(framework.TypeString, "What a node that cannot write storage does with token reads: forward or local."),
})

// typesListResponses answers types/ lists.
var typesListResponses = respOK("The supported credential types.", map[string]*framework.FieldSchema{
	"keys":     sometimes(framework.TypeStringSlice, "Names of the credential types."),
	"key_info": sometimes(framework.TypeMap, "Per type name: an object with its description."),
})

// typeResponses answers types/<type> reads.
var typeResponses = respOK("A credential type's field schema.", map[string]*framework.FieldSchema{
	"name":              always(framework.TypeString, "Name of the type."),
	"description":       always(framework.TypeString, "What the type is for."),
	"fields":            always(framework.TypeSlice, "The type's fields: objects with name, kind, description, secret, required, and default and allowed when set."),
	"secret_fields":     always(framework.TypeStringSlice, "Names of the fields that are secret (never returned by reads)."),
	"grants":            always(framework.TypeStringSlice, "OAuth2 grant types the type supports; empty for static types."),
	"supports_refresh":  always(framework.TypeBool, "Whether the type's tokens can be refreshed."),
	"supports_rotation": always(framework.TypeBool, "Whether the type can be rotated."),
})

// credentialResponses answers creds/<name> reads and writes
// (credential.responseData): the common fields and the type's non-secret
// fields.
var credentialResponses = respOK("The credential, without its secret fields.", credentialResponseFields())

// credentialResponseFields are the common fields every credential answer
// has, and every type's non-secret fields (present for the types that have
// them).
func credentialResponseFields() map[string]*framework.FieldSchema {
	fields := map[string]*framework.FieldSchema{
		"id":                      always(framework.TypeString, "Id of the credential's current secret version (a UUID)."),
		"name":                    always(framework.TypeString, "Name of the credential."),
		"type":                    always(framework.TypeString, "Credential type (see types/)."),
		"version":                 always(framework.TypeInt, "Number of the current secret version, from 1."),
		"description":             always(framework.TypeString, "Free-text description."),
		"tags":                    always(framework.TypeStringSlice, "Tags."),
		"metadata":                always(framework.TypeKVPairs, "Key/value metadata."),
		"created_at":              always(framework.TypeTime, "When the credential was created."),
		"updated_at":              always(framework.TypeTime, "When the credential was last changed."),
		"expires_at":              always(framework.TypeTime, "When the credential's token stops working; null when it does not expire or is not known."),
		"status":                  always(framework.TypeString, "active, error (the last background operation failed), needs_reconnect (the provider declared the grant dead: no upstream calls until reconnected) or expired."),
		"last_error":              always(framework.TypeString, "The last failure of a background operation; empty when none."),
		"refresh_failures":        always(framework.TypeInt, "Consecutive failed token refreshes; 0 after a success."),
		"next_refresh_attempt_at": always(framework.TypeTime, "When background refresh tries again after failures (exponential backoff, 1m doubling to 1h); null when not backing off."),
		"reconnect":               always(framework.TypeMap, "For needs_reconnect: an object with error_code (invalid_grant, invalid_client or unauthorized_client) and since; null otherwise."),
		"rotation":                always(framework.TypeMap, "The rotation policy and state, as creds/<name>/rotation reads show them."),
		"mirror":                  always(framework.TypeStringSlice, "Mirror targets the credential is copied to."),
		"mirror_content":          always(framework.TypeString, "What is mirrored: secret or token."),
	}
	for _, f := range types.AllFields() {
		if f.Secret {
			continue
		}
		if _, common := fields[f.Name]; common {
			continue
		}
		fields[f.Name] = sometimes(responseType(f.Kind), f.Description)
	}
	return fields
}

// responseType is the response field type of a credential type's field:
// the request type, except that lists are answered as JSON arrays.
func responseType(k types.FieldKind) framework.FieldType {
	if k == types.KindStringList {
		return framework.TypeStringSlice
	}
	return frameworkType(k)
}

// tokenResponses answers token/<name> reads and writes and refresh/<name>
// (servedToken.responseData).
var tokenResponses = respOK("The credential's ready-to-use token.", map[string]*framework.FieldSchema{
	"access_token":    always(framework.TypeString, "The API key, password, or bearer or access token."),
	"token_type":      always(framework.TypeString, "Kind of token, e.g. Bearer, Basic or api_key."),
	"header_name":     always(framework.TypeString, "Header to put the token in."),
	"header_value":    always(framework.TypeString, "Value of that header."),
	"version":         always(framework.TypeInt, "Secret version the token belongs to."),
	"expires_at":      always(framework.TypeTime, "When the token expires; null when it does not."),
	"query_param":     sometimes(framework.TypeString, "Query parameter to put the token in, for api_key credentials placed in the query."),
	"ttl":             sometimes(framework.TypeInt64, "Seconds until the engine serves a new token (expiring tokens)."),
	"rotation_period": sometimes(framework.TypeInt64, "The token's lifetime in seconds (expiring tokens)."),
})

// refreshDueResponses answers refresh/ writes.
var refreshDueResponses = respOK("What the refresh did.", map[string]*framework.FieldSchema{
	"refreshed": always(framework.TypeStringSlice, "Names of the credentials refreshed."),
	"failed":    always(framework.TypeSlice, "Credentials that failed to refresh: objects with name and error."),
})

// rotateResponses answers rotate/<name> writes.
var rotateResponses = respOK("The new secret version.", map[string]*framework.FieldSchema{
	"id":          always(framework.TypeString, "Id of the new version."),
	"previous_id": always(framework.TypeString, "Id of the version it replaced."),
	"version":     always(framework.TypeInt, "Number of the new version."),
	"name":        always(framework.TypeString, "Name of the credential."),
})

// rotationResponses answers creds/<name>/rotation reads and writes
// (credential.rotationData).
var rotationResponses = respOK("The rotation policy and state.", map[string]*framework.FieldSchema{
	"interval":         always(framework.TypeInt64, "Time between rotations in seconds; 0 when periodic rotation is off."),
	"warning_period":   always(framework.TypeInt64, "How long before a due rotation the credential is flagged, in seconds."),
	"strategy":         always(framework.TypeString, "immediate or blue_green."),
	"grace_period":     always(framework.TypeInt64, "How long blue_green keeps the previous version readable, in seconds."),
	"rotate_at":        always(framework.TypeTime, "The one-off rotation time; null when none."),
	"webhook_url":      always(framework.TypeString, "Endpoint that answers new secret values; empty when none."),
	"next_rotation_at": always(framework.TypeTime, "When the next rotation is due; null when none is."),
	"warning":          always(framework.TypeBool, "Whether a rotation is due within warning_period."),
	"last_rotated_at":  always(framework.TypeTime, "When the credential was last rotated; null when never."),
	"failures":         always(framework.TypeInt, "Failed rotation attempts since the last success."),
	"last_error":       always(framework.TypeString, "The last rotation failure; empty when none."),
	"next_attempt_at":  always(framework.TypeTime, "When a failed rotation is retried; null when none is pending."),
	"previous_version": always(framework.TypeMap, "The version a blue_green rotation keeps readable (id, version, grace_until); null when none."),
})

// auditResponses answers audit reads.
var auditResponses = respOK("Audit events, newest first.", map[string]*framework.FieldSchema{
	"events": always(framework.TypeSlice, "The events: objects with id, time, action, credential, version, actor, entity_id, request_id, user_id, user, execution_id, workflow_id, success and error (empty ones left out)."),
	"next":   always(framework.TypeString, "Cursor for the next page; empty when the trail has no more events."),
	"searched_back_to": sometimes(framework.TypeTime,
		"Everything newer than this was searched; set when the request stopped at its bound of reads before filling the page."),
})

// auditExportResponses answers audit/export writes.
var auditExportResponses = respOK("The audit report.", map[string]*framework.FieldSchema{
	"report":       always(framework.TypeString, "The report, base64-encoded."),
	"content_type": always(framework.TypeString, "Media type of the report: application/json, text/csv or application/pdf."),
	"count":        always(framework.TypeInt, "Number of events in the report."),
	"next":         always(framework.TypeString, "Cursor to export older events with; empty when none are left."),
})

// healthResponses answers health reads.
var healthResponses = respOK("The engine's health.", map[string]*framework.FieldSchema{
	"status":     always(framework.TypeString, "healthy, degraded or unhealthy."),
	"issues":     always(framework.TypeSlice, "Problems found: objects with kind, message, and credential or target."),
	"checked_at": always(framework.TypeTime, "When the health was checked."),
})

// prometheusMediaType is the media type of metrics?format=prometheus
// answers (the Prometheus text exposition format).
const prometheusMediaType = "text/plain"

// metricsResponses answers metrics reads: JSON, or with format=prometheus
// a raw body in the Prometheus text exposition format.
var metricsResponses = map[int][]framework.Response{http.StatusOK: {
	{Description: "The engine's metrics.", Fields: map[string]*framework.FieldSchema{
		"total_credentials":   always(framework.TypeInt, "Credentials in storage."),
		"credentials_by_type": always(framework.TypeMap, "Credentials in storage per type name."),
		"token_reads":         always(framework.TypeInt64, "Token reads served by this node."),
		"cache_hits":          always(framework.TypeInt64, "Token reads answered from the cache."),
		"cache_misses":        always(framework.TypeInt64, "Token reads that loaded from storage."),
		"cache_hit_rate":      always(framework.TypeFloat, "cache_hits over all cache lookups; 0 before the first."),
		"cache_size":          always(framework.TypeInt, "Tokens in this node's cache."),
		"refresh_count":       always(framework.TypeInt64, "Upstream token requests made by this node."),
		"refresh_failures":    always(framework.TypeInt64, "Upstream token requests that failed."),
		"avg_refresh_ms":      always(framework.TypeFloat, "Mean duration of an upstream token request, in milliseconds."),
		"p99_refresh_ms":      always(framework.TypeFloat, "99th percentile of recent upstream token request durations, in milliseconds."),
		"rotations":           always(framework.TypeInt64, "Rotations done by this node."),
		"rotation_failures":   always(framework.TypeInt64, "Rotations that failed."),
		"audit_pending":       always(framework.TypeInt, "Audit events buffered, not yet written."),
		"audit_dropped":       always(framework.TypeInt64, "Audit events dropped because the buffer was full."),
		// Notifications and dead grants (notify.go, reconnect.go).
		"notifications_sent":     always(framework.TypeInt64, "Notification events delivered."),
		"notifications_failed":   always(framework.TypeInt64, "Notification events not delivered after their retries."),
		"notifications_dropped":  always(framework.TypeInt64, "Notification events dropped: the queue was full, more than the queue could hold were left undelivered at a start, an undelivered one could not be decoded, or one held only in memory was lost at a stop."),
		"notifications_pending":  always(framework.TypeInt, "Notification events queued, not yet delivered."),
		"needs_reconnect_marked": always(framework.TypeInt64, "Credentials this node marked needs_reconnect."),
	}},
	{Description: "With format=prometheus: the nebula_* metric families in the Prometheus text exposition format.", MediaType: prometheusMediaType},
}}

// credentialMetricsResponses answers metrics/<name> reads.
var credentialMetricsResponses = respOK("One credential's metrics.", map[string]*framework.FieldSchema{
	"name":             always(framework.TypeString, "Name of the credential."),
	"usage_count":      always(framework.TypeInt64, "Token reads served by the active node since the plugin started (standbys forward metrics reads)."),
	"last_used":        always(framework.TypeTime, "Last token read on this node; null when none."),
	"refresh_count":    always(framework.TypeInt64, "Upstream token requests made by this node."),
	"last_refresh":     always(framework.TypeTime, "Last upstream token request on this node; null when none."),
	"last_error":       always(framework.TypeString, "The last refresh or rotation failure; empty when none."),
	"next_rotation_at": always(framework.TypeTime, "When the next rotation is due; null when none is."),
	"issues":           always(framework.TypeStringSlice, "Kinds of the health issues of the credential, sorted."),
})

// batchResponses answers batch/create and batch/delete writes.
func batchResponses(result string) map[int][]framework.Response {
	return respOK("One result per item, in order.", map[string]*framework.FieldSchema{
		"results":   always(framework.TypeSlice, "One object per item: name, and "+result+", or error (code prefix and message)."),
		"succeeded": always(framework.TypeInt, "Items that succeeded."),
		"failed":    always(framework.TypeInt, "Items that failed."),
	})
}

// mirrorAWSResponses answers mirror/aws reads and writes.
var mirrorAWSResponses = respOK("The AWS Secrets Manager target, without its secret key.", map[string]*framework.FieldSchema{
	"region":         always(framework.TypeString, "AWS region."),
	"endpoint":       always(framework.TypeString, "Secrets Manager endpoint override; empty when none."),
	"access_key":     always(framework.TypeString, "Access key id; empty for the SDK's default credential chain."),
	"secret_key_set": always(framework.TypeBool, "Whether a secret access key is stored."),
	"role_arn":       always(framework.TypeString, "Role assumed for the writes; empty when none."),
	"kms_key_id":     always(framework.TypeString, "KMS key for secrets the target creates; empty when none."),
	"name_template":  always(framework.TypeString, "Secret name template; empty for the default."),
	"tags":           always(framework.TypeKVPairs, "Tags set on every secret."),
})

// mirrorAzureResponses answers mirror/azure reads and writes.
var mirrorAzureResponses = respOK("The Azure Key Vault target, without its client secret.", map[string]*framework.FieldSchema{
	"vault_url":         always(framework.TypeString, "Key Vault URL."),
	"tenant_id":         always(framework.TypeString, "Entra tenant of the service principal."),
	"client_id":         always(framework.TypeString, "Service principal client id."),
	"client_secret_set": always(framework.TypeBool, "Whether a client secret is stored."),
	"name_template":     always(framework.TypeString, "Secret name template; empty for the default."),
	"tags":              always(framework.TypeKVPairs, "Tags set on every secret."),
})

// mirrorStatusResponses answers mirror/status reads.
var mirrorStatusResponses = respOK("Sync status per mirrored credential and target.", map[string]*framework.FieldSchema{
	"status": always(framework.TypeSlice, "Objects with name, target, sync_status (synced, pending, error, delete_pending), last_synced_at and last_error, sorted by name and target."),
})

// providerResponses answers providers/<name> reads and writes.
var providerResponses = respOK("The OAuth2 provider preset.", map[string]*framework.FieldSchema{
	"name":           always(framework.TypeString, "Name of the preset."),
	"auth_url":       always(framework.TypeString, "Authorization endpoint."),
	"token_url":      always(framework.TypeString, "Token endpoint."),
	"device_url":     always(framework.TypeString, "Device authorization endpoint."),
	"revocation_url": always(framework.TypeString, "Token revocation endpoint."),
	"scopes":         always(framework.TypeStringSlice, "Default scopes."),
	"pkce":           always(framework.TypeBool, "Whether the provider supports PKCE S256."),
	"auth_style":     always(framework.TypeString, "Client authentication: auto, header or body."),
	"built_in":       always(framework.TypeBool, "Whether the preset is built in (read-only)."),
})

// flowResponses answers flows/start, flows/<flow_id> reads and
// flows/<flow_id>/complete (flow.responseData).
var flowResponses = respOK("The flow's status.", map[string]*framework.FieldSchema{
	"flow_id":                   always(framework.TypeString, "Id of the flow."),
	"name":                      always(framework.TypeString, "Name of the credential the flow creates, or reconnects."),
	"reconnect":                 sometimes(framework.TypeBool, "true when creds/<name>/reconnect started the flow: it gives the existing credential a new grant."),
	"grant_type":                always(framework.TypeString, "authorization_code or device_code."),
	"interaction_type":          always(framework.TypeString, "How the user signs in: redirect (browser) or device_code."),
	"status":                    always(framework.TypeString, "pending, completed, failed or expired."),
	"created_at":                always(framework.TypeTime, "When the flow started."),
	"expires_at":                always(framework.TypeTime, "When the flow stops waiting for the user."),
	"ended_at":                  sometimes(framework.TypeTime, "When the flow ended (completed or failed)."),
	"error":                     sometimes(framework.TypeString, "Why the flow failed (failed flows)."),
	"id":                        sometimes(framework.TypeString, "Id of the credential the flow created (completed flows)."),
	"auth_url":                  sometimes(framework.TypeString, "URL to send the user to (flows/start of authorization_code)."),
	"redirect_uri":              sometimes(framework.TypeString, "Where the provider sends the browser back (flows/start of authorization_code)."),
	"user_code":                 sometimes(framework.TypeString, "Code the user enters (pending device_code flows)."),
	"verification_uri":          sometimes(framework.TypeString, "Where the user enters the code (pending device_code flows)."),
	"verification_uri_complete": sometimes(framework.TypeString, "verification_uri with the code in it, when the provider gives one (pending device_code flows)."),
	"interval":                  sometimes(framework.TypeInt, "Seconds between polls of the token endpoint (pending device_code flows)."),
	"last_poll_error":           sometimes(framework.TypeString, "The last poll's error, when it was not authorization_pending (pending device_code flows)."),
})

// callbackResponses answers callback reads.
var callbackResponses = respOK("The signed-in flow.", map[string]*framework.FieldSchema{
	"status":  always(framework.TypeString, "The flow's status: completed."),
	"flow_id": always(framework.TypeString, "Id of the flow."),
	"name":    always(framework.TypeString, "Name of the credential created."),
	"message": always(framework.TypeString, "Text for the user."),
})
