package nebula

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/nebula-credential/nebula-credential/internal/upstream"
	"github.com/nebula-credential/nebula-credential/types"
)

// Bounds of rotation policies.
const (
	minRotationInterval = time.Minute
	maxGracePeriod      = 30 * 24 * time.Hour
	defaultGracePeriod  = time.Hour
)

func pathRotate(b *backend) []*framework.Path {
	rotateFields := map[string]*framework.FieldSchema{
		"name": {Type: framework.TypeString, Description: "Name of the credential."},
	}
	for _, f := range types.AllFields() {
		if f.Secret || f.Name == "expires_at" {
			rotateFields[f.Name] = &framework.FieldSchema{Type: frameworkType(f.Kind), Description: "New value: " + f.Description}
		}
	}
	return []*framework.Path{
		{
			Pattern:      "rotate/(?P<name>[^/]+)$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationVerb: "rotate", OperationSuffix: "credential"},
			Fields:       rotateFields,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathRotateWrite, Responses: rotateResponses},
			},
			HelpSynopsis:    "Rotate a credential now.",
			HelpDescription: rotateHelp,
		},
		{
			Pattern:      "creds/(?P<name>[^/]+)/rotation$",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: "nebula", OperationSuffix: "rotation-policy"},
			Fields: map[string]*framework.FieldSchema{
				"name":           {Type: framework.TypeString, Description: "Name of the credential."},
				"interval":       {Type: framework.TypeDurationSecond, Description: "Time between rotations; 0 turns periodic rotation off."},
				"warning_period": {Type: framework.TypeDurationSecond, Description: "How long before a due rotation the credential is flagged as rotation due."},
				"strategy":       {Type: framework.TypeString, Description: "immediate (the previous version is destroyed at once) or blue_green (it stays readable for grace_period)."},
				"grace_period":   {Type: framework.TypeDurationSecond, Description: "How long blue_green keeps the previous version readable (default 1h)."},
				"rotate_at":      {Type: framework.TypeTime, Description: "A one-off rotation time (RFC 3339)."},
				"webhook_url":    {Type: framework.TypeString, Description: "https endpoint that answers new secret values (HMAC-signed request), for types that cannot make their own."},
				"webhook_secret": {Type: framework.TypeString, Description: "HMAC-SHA256 key for webhook requests (at least 16 characters). Secret: never returned."},
			},
			ExistenceCheck: b.credentialPolicyExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation:   &framework.PathOperation{Callback: b.pathRotationRead, Responses: rotationResponses},
				logical.CreateOperation: &framework.PathOperation{Callback: b.pathRotationWrite, Responses: rotationResponses},
				logical.UpdateOperation: &framework.PathOperation{Callback: b.pathRotationWrite, Responses: rotationResponses},
				logical.DeleteOperation: &framework.PathOperation{Callback: b.pathRotationDelete, Responses: respNoContent},
			},
			HelpSynopsis:    "Read, set or remove a credential's rotation policy.",
			HelpDescription: "A policy rotates the credential every interval (and once at rotate_at), from Vault's periodic calls on the active node, retrying failures with backoff. Reads show next_rotation_at, last_rotated_at and warning (inside warning_period of a due rotation).",
		},
	}
}

func (b *backend) pathRotateWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	if err := validateName(name); err != nil {
		return nil, invalidInput(err)
	}
	supplied := typeValues(d, func(field string) bool { return field == "name" })
	res, err := b.rotate(ctx, req.Storage, name, supplied)
	ev := auditEvent{Action: actionRotate, Credential: name}
	if res != nil {
		ev.Version = res.Version
	}
	b.audit(ctx, req, auditOutcome(ev, err), nil)
	if err != nil {
		if ErrorKind(err) == KindRotationFailed {
			b.stats.rotationFailures.Add(1)
		}
		return nil, err
	}
	if err := b.syncMirrors(ctx, req.Storage, name); err != nil {
		b.logger.Warn("mirror write failed; will retry", "credential", name, "error", err)
	}
	return &logical.Response{Data: map[string]any{
		"id": res.ID, "previous_id": res.PreviousID, "version": res.Version, "name": name,
	}}, nil
}

func (b *backend) credentialPolicyExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	name := d.Get("name").(string)
	if validateName(name) != nil {
		return false, nil
	}
	c, err := loadCredential(ctx, req.Storage, name)
	return c != nil && c.Rotation != nil, err
}

func (b *backend) pathRotationRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	c, err := loadCredentialRequired(ctx, req.Storage, d.Get("name").(string))
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: c.rotationData(b.now())}, nil
}

// rotationData is the rotation policy and state as reads show them.
func (c *credential) rotationData(now time.Time) map[string]any {
	data := map[string]any{
		"interval": 0, "warning_period": 0, "strategy": strategyImmediate, "grace_period": 0,
		"rotate_at": nil, "webhook_url": "", "next_rotation_at": nil, "warning": false,
		"last_rotated_at": formatTime(c.RotationState.LastRotatedAt), "failures": c.RotationState.Failures,
		"last_error": c.RotationState.LastError, "next_attempt_at": formatTime(c.RotationState.NextAttemptAt),
		"previous_version": nil,
	}
	if p := c.Rotation; p != nil {
		data["interval"] = int64(p.Interval.Seconds())
		data["warning_period"] = int64(p.WarningPeriod.Seconds())
		data["strategy"] = p.Strategy
		data["grace_period"] = int64(p.GracePeriod.Seconds())
		data["rotate_at"] = formatTime(p.RotateAt)
		data["webhook_url"] = p.WebhookURL
		data["next_rotation_at"] = formatTime(c.nextRotation())
		data["warning"] = c.rotationWarning(now)
	}
	if c.Previous != nil {
		data["previous_version"] = map[string]any{
			"id": c.Previous.ID, "version": c.Previous.Version, "grace_until": formatTime(c.Previous.GraceUntil),
		}
	}
	return data
}

// formatTime renders a time as RFC 3339, or nil for the zero time.
func formatTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(time.RFC3339)
}

func (b *backend) pathRotationWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	lock := b.lock(name)
	lock.Lock()
	defer lock.Unlock()
	c, err := loadCredentialRequired(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	p := rotationPolicy{Strategy: strategyImmediate}
	if c.Rotation != nil {
		p = *c.Rotation
	}
	secret, err := applyPolicyFields(&p, d)
	if err != nil {
		return nil, err
	}
	cfg, err := b.getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if err := p.validate(cfg, secret != nil || c.Rotation != nil && c.Rotation.WebhookURL != ""); err != nil {
		return nil, invalidInput(err)
	}
	if p.WebhookURL != "" && secret == nil && (c.Rotation == nil || c.Rotation.WebhookURL == "") {
		return nil, newError(KindInvalidInput, "field \"webhook_secret\" is required with webhook_url")
	}
	if p.WebhookURL != "" && secret == nil && c.Rotation.WebhookURL != p.WebhookURL {
		// Requests signed with the stored secret never go to a new address.
		return nil, newError(KindInvalidInput, "a new \"webhook_url\" needs \"webhook_secret\" in the same write")
	}
	if err := b.checkWebhookSecret(ctx, req.Storage, name, p.WebhookURL, secret); err != nil {
		return nil, err
	}
	if secret != nil {
		entry, err := jsonEntry(webhookStorageKey(name), &webhookSecret{Secret: *secret}, true)
		if err != nil {
			return nil, err
		}
		if err := req.Storage.Put(ctx, entry); err != nil {
			return nil, storageError("storing the webhook secret", err)
		}
	}
	c.Rotation = &p
	c.RotationState.NextAttemptAt, c.RotationState.Failures = time.Time{}, 0
	if err := b.writeMeta(ctx, req.Storage, c); err != nil {
		return nil, err
	}
	b.reschedule(ctx, req.Storage, c)
	return &logical.Response{Data: c.rotationData(b.now())}, nil
}

// checkWebhookSecret enforces the webhook secret's floor: a supplied secret
// has at least minSigningSecret characters (an empty one is allowed only
// without a webhook_url), and a policy with a webhook_url that keeps the
// stored secret needs that one to meet the floor too (secrets stored before
// it was enforced must be replaced).
func (b *backend) checkWebhookSecret(ctx context.Context, s logical.Storage, name, webhookURL string, supplied *string) error {
	short := func(what string) error {
		return newError(KindInvalidInput, "field \"webhook_secret\": %s; it must be at least %d characters long", what, minSigningSecret)
	}
	if supplied != nil {
		switch n := utf8.RuneCountInString(*supplied); {
		case n == 0 && webhookURL == "":
			return nil
		case n == 0:
			return short("an empty secret cannot sign webhook requests")
		case n < minSigningSecret:
			return short(fmt.Sprintf("the secret is %d characters long", n))
		}
		return nil
	}
	if webhookURL == "" {
		return nil
	}
	entry, err := s.Get(ctx, webhookStorageKey(name))
	if err != nil {
		return storageError("reading the webhook secret", err)
	}
	var ws webhookSecret
	if entry != nil {
		if err := entry.DecodeJSON(&ws); err != nil {
			return storageError("decoding the webhook secret", err)
		}
	}
	if utf8.RuneCountInString(ws.Secret) < minSigningSecret {
		return short("the stored secret is too short; supply a new one")
	}
	return nil
}

// applyPolicyFields sets the policy fields the request names; it returns
// the webhook secret when one was supplied.
func applyPolicyFields(p *rotationPolicy, d *framework.FieldData) (*string, error) {
	for field, dst := range map[string]*time.Duration{
		"interval": &p.Interval, "warning_period": &p.WarningPeriod, "grace_period": &p.GracePeriod,
	} {
		if v, ok := d.GetOk(field); ok {
			*dst = time.Duration(v.(int)) * time.Second
		}
	}
	if v, ok := d.GetOk("strategy"); ok {
		p.Strategy = v.(string)
		if p.Strategy == strategyBlueGreen && p.GracePeriod == 0 {
			if _, set := d.GetOk("grace_period"); !set {
				p.GracePeriod = defaultGracePeriod
			}
		}
	}
	if v, ok := d.GetOk("rotate_at"); ok {
		p.RotateAt = v.(time.Time).UTC()
	}
	if v, ok := d.GetOk("webhook_url"); ok {
		p.WebhookURL = v.(string)
	}
	if v, ok := d.GetOk("webhook_secret"); ok {
		s := v.(string)
		return &s, nil
	}
	return nil, nil
}

func (p *rotationPolicy) validate(cfg *Config, hasSecret bool) error {
	var errs []error
	if p.Interval != 0 && p.Interval < minRotationInterval {
		errs = append(errs, fmt.Errorf("field \"interval\" must be 0 or at least %s", minRotationInterval))
	}
	if p.Interval < 0 || p.WarningPeriod < 0 || p.GracePeriod < 0 {
		errs = append(errs, errors.New("durations must not be negative"))
	}
	if p.Interval > 0 && p.WarningPeriod >= p.Interval {
		errs = append(errs, errors.New("field \"warning_period\" must be shorter than interval"))
	}
	if p.GracePeriod > maxGracePeriod {
		errs = append(errs, fmt.Errorf("field \"grace_period\" must be at most %s", maxGracePeriod))
	}
	if p.Strategy != strategyImmediate && p.Strategy != strategyBlueGreen {
		errs = append(errs, errors.New("field \"strategy\" must be immediate or blue_green"))
	}
	if p.WebhookURL != "" {
		if err := upstream.CheckURL(cfg.HostAllowed, p.WebhookURL); err != nil {
			errs = append(errs, fmt.Errorf("field \"webhook_url\": %w", err))
		}
	}
	return errors.Join(errs...)
}

func (b *backend) pathRotationDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	return nil, b.withCredentialLock(name, func() error {
		c, err := loadCredentialRequired(ctx, req.Storage, name)
		if err != nil {
			return err
		}
		c.Rotation = nil
		c.RotationState.NextAttemptAt, c.RotationState.Failures, c.RotationState.LastError = time.Time{}, 0, ""
		if err := req.Storage.Delete(ctx, webhookStorageKey(name)); err != nil {
			return storageError("deleting the webhook secret", err)
		}
		if err := b.writeMeta(ctx, req.Storage, c); err != nil {
			return err
		}
		b.reschedule(ctx, req.Storage, c)
		return nil
	})
}

const rotateHelp = `
Makes a new version of the credential and returns its id, the previous id
and the version number. oauth2 obtains fresh tokens (and revokes the old ones
where a revocation endpoint exists); api_key, basic_auth and bearer take the
new secret values given here, or fetch them from the rotation webhook;
generated makes a new random secret. The rotation policy's strategy decides
whether the previous version stays readable (blue_green, until grace_period
ends, as token/<name>?version=previous) or is destroyed at once.
`
