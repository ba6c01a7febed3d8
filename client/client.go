// Package client is a typed Go client of the nebula-credential secrets
// engine: the CredentialManager API (create, get, get token, update,
// delete, refresh, rotate, rotation policies, interactive flows, cache,
// health, metrics, audit, batch operations, mirror targets, configuration)
// over Vault's (or OpenBao's) HTTP API, through
// github.com/hashicorp/vault/api.
//
// NewFromEnv builds a Client from VAULT_ADDR, VAULT_TOKEN, VAULT_NAMESPACE
// and NEBULA_MOUNT; New wraps a Vault API client of your own. WithRetry
// retries the failures worth retrying (Error.Retryable) without repeating
// what would call a provider again; BatchCreate and BatchDelete split
// large inputs into requests a listener accepts.
//
// Every method takes a context and answers typed values. Failures the
// engine reports are *Error values whose Kind mirrors the engine's error
// kinds; compare them with errors.Is and the Err* sentinels. A Token never
// shows its secret through fmt, encoding/json or log/slog; read it with
// Token.Value, Token.HeaderValue or Token.Apply.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/hashicorp/vault/api"
)

// DefaultMount is the mount path of the engine unless WithMount says
// otherwise.
const DefaultMount = "nebula"

// maxResponse bounds a response body the client reads (audit exports are
// the largest).
const maxResponse = 256 << 20

// Client calls one mount of the nebula-credential engine through a Vault
// API client. It is safe for concurrent use as far as the Vault client is
// (token, namespace and headers are the Vault client's).
type Client struct {
	vc    *api.Client
	mount string // without leading or trailing slashes

	retry retryPolicy // WithRetry; no retries when attempts <= 1

	// batchItems and batchStrings bound one batch request: items per
	// request and JSON strings per body (WithBatchChunkSize,
	// WithBatchMaxStrings).
	batchItems, batchStrings int
}

// Option changes how New or NewFromEnv sets up a Client.
type Option func(*Client)

// WithMount sets the engine's mount path, e.g. "secrets/nebula"; leading
// and trailing slashes are ignored. The default is "nebula".
func WithMount(path string) Option {
	return func(c *Client) { c.mount = strings.Trim(path, "/") }
}

// New returns a Client of the engine mounted in the Vault that vc talks
// to, with vc's address, token, namespace, timeout and retry policy. Note
// that the Vault client's default policy (api.DefaultConfig) retries 5xx
// answers, so an engine's refresh_failed or rotation_failed (502) is
// retried MaxRetries times, calling the upstream again: prefer
// vc.SetMaxRetries(0) with WithRetry, whose policy knows the engine's
// error kinds (NewFromEnv does that).
func New(vc *api.Client, opts ...Option) *Client {
	c := &Client{vc: vc, mount: DefaultMount}
	for _, opt := range opts {
		opt(c)
	}
	if c.mount == "" {
		c.mount = DefaultMount
	}
	if c.batchItems <= 0 {
		c.batchItems = DefaultBatchChunkSize
	}
	if c.batchStrings == 0 {
		c.batchStrings = DefaultBatchMaxStrings
	}
	return c
}

// Mount is the engine's mount path, without slashes.
func (c *Client) Mount() string { return c.mount }

// Vault returns the underlying Vault API client.
func (c *Client) Vault() *api.Client { return c.vc }

// envelope is Vault's response body.
type envelope struct {
	Data     json.RawMessage `json:"data"`
	Warnings []string        `json:"warnings"`
}

// pathOf joins the mount and path segments. Segments the caller supplied
// (names, ids) must be one path segment each: the Vault client cleans
// paths, so "a/../b" would reach another path.
func (c *Client) pathOf(segments ...string) (string, error) {
	for _, s := range segments {
		if s == "" || s == "." || s == ".." || strings.Contains(s, "/") {
			return "", clientError(InvalidInput, "%q is not a valid name: it must be one non-empty path segment", s)
		}
	}
	return c.mount + "/" + strings.Join(segments, "/"), nil
}

// read GETs path with query params and decodes the response's data into
// out (when not nil). It answers the response's warnings. Reads are
// replayable.
func (c *Client) read(ctx context.Context, path string, params url.Values, out any) ([]string, error) {
	var warnings []string
	err := c.withRetry(ctx, replayable, func() error {
		resp, err := c.vc.Logical().ReadRawWithDataWithContext(ctx, path, params)
		warnings, err = decodeResponse("read "+path, resp, err, out)
		return err
	})
	return warnings, err
}

// write PUTs body as JSON to path and decodes the response's data into out
// (when not nil); r says whether WithRetry may send it again after a
// failure that may have reached the engine.
func (c *Client) write(ctx context.Context, r replay, path string, body map[string]any, out any) ([]string, error) {
	var warnings []string
	err := c.withRetry(ctx, r, func() error {
		var err error
		warnings, err = c.writeOnce(ctx, path, body, out)
		return err
	})
	return warnings, err
}

// writeOnce is one request of write.
func (c *Client) writeOnce(ctx context.Context, path string, body map[string]any, out any) ([]string, error) {
	if body == nil {
		body = map[string]any{}
	}
	secret, err := c.vc.Logical().WriteWithContext(ctx, path, body)
	if err != nil {
		return nil, fromAPI("write "+path, err)
	}
	if secret == nil {
		return nil, nil
	}
	if out != nil && secret.Data != nil {
		raw, err := json.Marshal(secret.Data)
		if err != nil {
			return secret.Warnings, fmt.Errorf("nebula: write %s: %w", path, err)
		}
		if err := json.Unmarshal(raw, out); err != nil {
			return secret.Warnings, fmt.Errorf("nebula: write %s: decoding the answer: %w", path, err)
		}
	}
	return secret.Warnings, nil
}

// delete DELETEs path. Deletes are replayable: deleting what is gone
// succeeds.
func (c *Client) delete(ctx context.Context, path string) error {
	return c.withRetry(ctx, replayable, func() error {
		resp, err := c.vc.Logical().DeleteRawWithContext(ctx, path)
		_, err = decodeResponse("delete "+path, resp, err, nil)
		return err
	})
}

// list lists the keys under path (a path ending in "/"). An empty list is
// Vault's 404 without error messages.
func (c *Client) list(ctx context.Context, path string, out any) error {
	err := c.withRetry(ctx, replayable, func() error {
		resp, err := c.vc.Logical().ReadRawWithDataWithContext(ctx, path, url.Values{"list": {"true"}})
		_, err = decodeResponse("list "+path, resp, err, out)
		return err
	})
	var e *Error
	if errors.As(err, &e) && e.Status == http.StatusNotFound && e.Code == "" && e.Message == http.StatusText(http.StatusNotFound) {
		return nil
	}
	return err
}

// decodeResponse closes resp and decodes its data into out; a Vault error
// becomes an *Error.
func decodeResponse(op string, resp *api.Response, err error, out any) ([]string, error) {
	if resp != nil && resp.Body != nil {
		defer resp.Body.Close()
	}
	if err != nil {
		return nil, fromAPI(op, err)
	}
	if resp == nil || resp.StatusCode == http.StatusNoContent {
		return nil, nil
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, fmt.Errorf("nebula: %s: reading the answer: %w", op, err)
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, nil
	}
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("nebula: %s: decoding the answer: %w", op, err)
	}
	if out != nil && len(env.Data) > 0 {
		if err := json.Unmarshal(env.Data, out); err != nil {
			return env.Warnings, fmt.Errorf("nebula: %s: decoding the answer: %w", op, err)
		}
	}
	return env.Warnings, nil
}

// listKeys is the data of a list response.
type listKeys struct {
	Keys []string `json:"keys"`
}
