package acceptance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/nebula-credential/nebula-credential/test/harness"
)

// driver is one way of talking to Vault: its HTTP API (api.Client) or the
// vault CLI. Tests run the same table through both.
type driver interface {
	Name() string
	Write(tb testing.TB, path string, data map[string]any) (*response, error)
	Read(tb testing.TB, path string) (*response, error)
	List(tb testing.TB, path string) ([]string, error)
	Delete(tb testing.TB, path string) error
}

// response is a successful answer: the raw output (to search for secrets)
// and its data.
type response struct {
	Raw  string
	Data map[string]any
}

// vaultError is an error answer as either driver saw it.
type vaultError struct {
	Status   int
	Messages []string
	// Hidden is true when the driver cannot see the messages (the vault CLI
	// prints "No value found" for any 404 of a read or list).
	Hidden bool
	Raw    string
}

func (e *vaultError) Error() string {
	return fmt.Sprintf("vault answered %d: %q", e.Status, e.Messages)
}

// drivers returns both drivers for the server, authenticated with token.
func drivers(v *harness.Vault, token string) []driver {
	return []driver{apiDriver{c: v.ClientWithToken(token)}, cliDriver{v: v, token: token}}
}

// forEachDriver runs f as a subtest per driver with the root token.
func forEachDriver(t *testing.T, v *harness.Vault, f func(t *testing.T, d driver)) {
	t.Helper()
	for _, d := range drivers(v, v.Token) {
		t.Run(d.Name(), func(t *testing.T) { f(t, d) })
	}
}

const requestTimeout = 60 * time.Second

// apiDriver talks to Vault's HTTP API through github.com/hashicorp/vault/api.
type apiDriver struct{ c *api.Client }

func (apiDriver) Name() string { return "api" }

func (d apiDriver) Write(tb testing.TB, path string, data map[string]any) (*response, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	secret, err := d.c.Logical().WriteWithContext(ctx, path, data)
	if err != nil {
		return nil, apiError(err)
	}
	raw, err := json.Marshal(secret)
	if err != nil {
		tb.Fatalf("encoding the response of %s: %v", path, err)
	}
	return decodeResponse(tb, raw)
}

// Read uses ReadRaw: Logical().Read answers (nil, nil) for a 404 and drops
// its message.
func (d apiDriver) Read(tb testing.TB, path string) (*response, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	resp, err := d.c.Logical().ReadRawWithContext(ctx, path)
	if resp != nil {
		defer resp.Body.Close()
	}
	if err != nil {
		return nil, apiError(err)
	}
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("reading the response of %s: %v", path, err)
	}
	return decodeResponse(tb, raw)
}

func (d apiDriver) List(tb testing.TB, path string) ([]string, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	secret, err := d.c.Logical().ListWithContext(ctx, path)
	if err != nil {
		return nil, apiError(err)
	}
	if secret == nil {
		return nil, nil
	}
	keys, _ := secret.Data["keys"].([]any)
	names := make([]string, 0, len(keys))
	for _, k := range keys {
		names = append(names, fmt.Sprint(k))
	}
	return names, nil
}

func (d apiDriver) Delete(tb testing.TB, path string) error {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	_, err := d.c.Logical().DeleteWithContext(ctx, path)
	return apiError(err)
}

// apiError turns an *api.ResponseError into a *vaultError.
func apiError(err error) error {
	var re *api.ResponseError
	if errors.As(err, &re) {
		return &vaultError{Status: re.StatusCode, Messages: re.Errors, Raw: re.Error()}
	}
	return err
}

func decodeResponse(tb testing.TB, raw []byte) (*response, error) {
	tb.Helper()
	resp := &response{Raw: string(raw), Data: map[string]any{}}
	if len(strings.TrimSpace(string(raw))) == 0 || string(raw) == "null" {
		return resp, nil
	}
	var body struct {
		Data map[string]any `json:"data"`
	}
	if err := decodeJSON(raw, &body); err != nil {
		tb.Fatalf("decoding %q: %v", raw, err)
	}
	if body.Data != nil {
		resp.Data = body.Data
	}
	return resp, nil
}

// cliDriver runs the vault CLI: `vault write path k=v ...`, `vault read
// -format=json`, `vault list -format=json`, `vault delete`.
type cliDriver struct {
	v     *harness.Vault
	token string
}

func (cliDriver) Name() string { return "cli" }

// Write passes the data as k=v arguments (lists comma-joined, maps as
// repeated k=key=value); data the CLI cannot express that way (nested
// objects, non-string maps) goes as JSON on standard input (`vault write
// path -`).
func (d cliDriver) Write(tb testing.TB, path string, data map[string]any) (*response, error) {
	tb.Helper()
	args, ok := kvArgs(data)
	opts := harness.CLIOptions{Token: d.token}
	if !ok {
		body, err := json.Marshal(data)
		if err != nil {
			tb.Fatalf("encoding %v: %v", data, err)
		}
		args, opts.Stdin = []string{"-"}, string(body)
	}
	out, err := d.v.CLIWith(tb, opts, append([]string{"write", "-format=json", path}, args...)...)
	if err != nil {
		return nil, cliError(err)
	}
	return decodeResponse(tb, []byte(out))
}

func (d cliDriver) Read(tb testing.TB, path string) (*response, error) {
	tb.Helper()
	out, err := d.v.CLIWithToken(tb, d.token, "read", "-format=json", path)
	if err != nil {
		return nil, cliError(err)
	}
	return decodeResponse(tb, []byte(out))
}

func (d cliDriver) List(tb testing.TB, path string) ([]string, error) {
	tb.Helper()
	out, err := d.v.CLIWithToken(tb, d.token, "list", "-format=json", path)
	if err != nil {
		err = cliError(err)
		var ve *vaultError
		if errors.As(err, &ve) && ve.Status == 404 {
			return nil, nil // nothing listed
		}
		return nil, err
	}
	var names []string
	if err := decodeJSON([]byte(out), &names); err != nil {
		tb.Fatalf("decoding the list %q: %v", out, err)
	}
	return names, nil
}

func (d cliDriver) Delete(tb testing.TB, path string) error {
	tb.Helper()
	_, err := d.v.CLIWithToken(tb, d.token, "delete", path)
	return cliError(err)
}

var cliCodeRe = regexp.MustCompile(`Code: (\d+)\. Errors:\n\n`)

// cliError parses the CLI's rendering of an API error ("Code: 400.
// Errors:", a blank line, then one "* message" per error, messages possibly
// spanning lines) into a *vaultError. The CLI shows a 404 of a read or list
// only as "No value found at ..." (or "{}" with -format=json).
func cliError(err error) error {
	var ce *harness.CLIError
	if !errors.As(err, &ce) {
		return err
	}
	out := ce.Stderr + ce.Stdout
	loc := cliCodeRe.FindStringSubmatchIndex(out)
	if loc == nil {
		if strings.Contains(out, "No value found at") || strings.TrimSpace(ce.Stdout) == "{}" {
			return &vaultError{Status: 404, Hidden: true, Raw: out}
		}
		return err
	}
	status, _ := strconv.Atoi(out[loc[2]:loc[3]])
	ve := &vaultError{Status: status, Raw: out}
	for _, line := range strings.Split(strings.TrimRight(out[loc[1]:], "\n"), "\n") {
		if msg, ok := strings.CutPrefix(line, "* "); ok {
			ve.Messages = append(ve.Messages, msg)
		} else if n := len(ve.Messages); n > 0 {
			ve.Messages[n-1] += "\n" + line
		}
	}
	return ve
}

// kvArgs renders data as vault CLI k=v arguments, sorted by key; ok is
// false when some value has no k=v form.
func kvArgs(data map[string]any) (args []string, ok bool) {
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch v := data[k].(type) {
		case string:
			args = append(args, k+"="+v)
		case int, int64, bool:
			args = append(args, fmt.Sprintf("%s=%v", k, v))
		case []string:
			args = append(args, k+"="+strings.Join(v, ","))
		case map[string]string:
			inner := make([]string, 0, len(v))
			for ik := range v {
				inner = append(inner, ik)
			}
			sort.Strings(inner)
			for _, ik := range inner {
				args = append(args, k+"="+ik+"="+v[ik])
			}
		default:
			return nil, false
		}
	}
	return args, true
}
