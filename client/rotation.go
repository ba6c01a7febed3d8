package client

import (
	"context"
	"time"
)

// Rotation strategies.
const (
	// StrategyImmediate retires the previous version at once.
	StrategyImmediate = "immediate"
	// StrategyBlueGreen keeps the previous version readable
	// (GetPreviousToken) until the grace period ends.
	StrategyBlueGreen = "blue_green"
)

// RotateResult is what Rotate answers.
type RotateResult struct {
	// Credential is the credential's name.
	Credential string
	// ID is the id of the new version.
	ID string
	// PreviousID is the id of the version it replaced.
	PreviousID string
	// Version is the new version number.
	Version int
}

// Rotate makes a new version of the credential now. values are new secret
// values (api_key, password, token, and for bearer expires_at); with none,
// OAuth2 credentials obtain fresh tokens, generated ones make a new secret
// and the others call their rotation webhook.
func (c *Client) Rotate(ctx context.Context, name string, values map[string]string) (*RotateResult, error) {
	path, err := c.pathOf("rotate", name)
	if err != nil {
		return nil, err
	}
	body := make(map[string]any, len(values))
	for k, v := range values {
		body[k] = v
	}
	var w struct {
		ID         string `json:"id"`
		PreviousID string `json:"previous_id"`
		Version    int    `json:"version"`
	}
	if _, err := c.write(ctx, once, path, body, &w); err != nil {
		return nil, err
	}
	return &RotateResult{Credential: name, ID: w.ID, PreviousID: w.PreviousID, Version: w.Version}, nil
}

// RotationPolicy is what SetRotationPolicy writes. Zero fields are not
// sent and keep their stored values (a new policy starts with no interval
// and the immediate strategy); DeleteRotationPolicy removes a policy.
type RotationPolicy struct {
	// Interval is the time between rotations (at least a minute).
	Interval time.Duration
	// WarningPeriod is how long before a due rotation the credential is
	// flagged as rotation due; shorter than Interval.
	WarningPeriod time.Duration
	// Strategy is StrategyImmediate or StrategyBlueGreen.
	Strategy string
	// GracePeriod is how long blue_green keeps the previous version
	// readable (the engine's default is an hour).
	GracePeriod time.Duration
	// RotateAt is a one-off rotation time.
	RotateAt time.Time
	// WebhookURL is the https endpoint that answers new secret values for
	// types that cannot make their own.
	WebhookURL string
	// WebhookSecret is the HMAC-SHA256 key of webhook requests (at least
	// 16 characters); required with a new WebhookURL.
	WebhookSecret Secret
}

func (p *RotationPolicy) body() map[string]any {
	body := map[string]any{}
	setSeconds(body, "interval", p.Interval)
	setSeconds(body, "warning_period", p.WarningPeriod)
	setString(body, "strategy", p.Strategy)
	setSeconds(body, "grace_period", p.GracePeriod)
	setTime(body, "rotate_at", p.RotateAt)
	setString(body, "webhook_url", p.WebhookURL)
	setString(body, "webhook_secret", p.WebhookSecret.Value())
	return body
}

// RotationStatus is a credential's rotation policy and state.
type RotationStatus struct {
	// Interval is the time between rotations; zero means no periodic
	// rotation.
	Interval time.Duration
	// WarningPeriod: see RotationPolicy.
	WarningPeriod time.Duration
	// Strategy is StrategyImmediate or StrategyBlueGreen.
	Strategy string
	// GracePeriod: see RotationPolicy.
	GracePeriod time.Duration
	// RotateAt is the one-off rotation time; zero when none.
	RotateAt time.Time
	// WebhookURL is the rotation webhook; empty when none.
	WebhookURL string
	// NextRotationAt is when the next rotation is due; zero when none is.
	NextRotationAt time.Time
	// LastRotatedAt is when the credential was last rotated; zero if never.
	LastRotatedAt time.Time
	// Warning is set inside the warning period of a due rotation.
	Warning bool
	// Failures counts scheduled rotations that failed in a row.
	Failures int
	// LastError is the last scheduled rotation's failure.
	LastError string
	// NextAttemptAt is when a failed scheduled rotation is retried.
	NextAttemptAt time.Time
	// Previous is the version a blue/green rotation keeps readable; nil
	// when none.
	Previous *PreviousVersion
}

// PreviousVersion is the version a blue/green rotation keeps readable.
type PreviousVersion struct {
	// ID is the version's id.
	ID string
	// Version is its number.
	Version int
	// GraceUntil is when it is destroyed.
	GraceUntil time.Time
}

// rotationWire is the engine's rotation policy response.
type rotationWire struct {
	Interval        int64     `json:"interval"`
	WarningPeriod   int64     `json:"warning_period"`
	Strategy        string    `json:"strategy"`
	GracePeriod     int64     `json:"grace_period"`
	RotateAt        time.Time `json:"rotate_at"`
	WebhookURL      string    `json:"webhook_url"`
	NextRotationAt  time.Time `json:"next_rotation_at"`
	LastRotatedAt   time.Time `json:"last_rotated_at"`
	Warning         bool      `json:"warning"`
	Failures        int       `json:"failures"`
	LastError       string    `json:"last_error"`
	NextAttemptAt   time.Time `json:"next_attempt_at"`
	PreviousVersion *struct {
		ID         string    `json:"id"`
		Version    int       `json:"version"`
		GraceUntil time.Time `json:"grace_until"`
	} `json:"previous_version"`
}

func (w *rotationWire) status() *RotationStatus {
	s := &RotationStatus{
		Interval: seconds(w.Interval), WarningPeriod: seconds(w.WarningPeriod), Strategy: w.Strategy,
		GracePeriod: seconds(w.GracePeriod), RotateAt: w.RotateAt, WebhookURL: w.WebhookURL,
		NextRotationAt: w.NextRotationAt, LastRotatedAt: w.LastRotatedAt, Warning: w.Warning,
		Failures: w.Failures, LastError: w.LastError, NextAttemptAt: w.NextAttemptAt,
	}
	if p := w.PreviousVersion; p != nil {
		s.Previous = &PreviousVersion{ID: p.ID, Version: p.Version, GraceUntil: p.GraceUntil}
	}
	return s
}

// SetRotationPolicy sets the credential's rotation policy (the fields the
// policy sets) and answers the resulting policy.
func (c *Client) SetRotationPolicy(ctx context.Context, name string, p RotationPolicy) (*RotationStatus, error) {
	return c.writeRotation(ctx, name, p.body())
}

// ScheduleRotation sets a one-off rotation at at, keeping the rest of the
// policy.
func (c *Client) ScheduleRotation(ctx context.Context, name string, at time.Time) (*RotationStatus, error) {
	if at.IsZero() {
		return nil, clientError(InvalidInput, "no rotation time given")
	}
	return c.writeRotation(ctx, name, map[string]any{"rotate_at": at.UTC().Format(time.RFC3339)})
}

func (c *Client) writeRotation(ctx context.Context, name string, body map[string]any) (*RotationStatus, error) {
	path, err := c.pathOf("creds", name, "rotation")
	if err != nil {
		return nil, err
	}
	var w rotationWire
	if _, err := c.write(ctx, replayable, path, body, &w); err != nil {
		return nil, err
	}
	return w.status(), nil
}

// GetRotationPolicy returns the credential's rotation policy and state.
func (c *Client) GetRotationPolicy(ctx context.Context, name string) (*RotationStatus, error) {
	path, err := c.pathOf("creds", name, "rotation")
	if err != nil {
		return nil, err
	}
	var w rotationWire
	if _, err := c.read(ctx, path, nil, &w); err != nil {
		return nil, err
	}
	return w.status(), nil
}

// DeleteRotationPolicy removes the credential's rotation policy (and its
// webhook secret).
func (c *Client) DeleteRotationPolicy(ctx context.Context, name string) error {
	path, err := c.pathOf("creds", name, "rotation")
	if err != nil {
		return err
	}
	return c.delete(ctx, path)
}

// seconds converts whole seconds to a Duration.
func seconds(n int64) time.Duration { return time.Duration(n) * time.Second }

// setSeconds sets body[key] to d in whole seconds when d is not zero.
func setSeconds(body map[string]any, key string, d time.Duration) {
	if d != 0 {
		body[key] = int64(d / time.Second)
	}
}
