package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-cleanhttp"
	"github.com/hashicorp/vault/api"
)

// Client returns a client of the server with the root token. It does not
// retry, so tests see every error as Vault sent it.
func (v *Vault) Client() *api.Client { return v.rawClient(v.Token) }

// ClientWithToken returns a client of the server using token.
func (v *Vault) ClientWithToken(token string) *api.Client { return v.rawClient(token) }

// rawClient builds a client from scratch rather than from
// api.DefaultConfig, which would take the caller's VAULT_* environment
// (proxy, TLS, agent address) along.
func (v *Vault) rawClient(token string) *api.Client {
	c, err := api.NewClient(&api.Config{
		Address:    v.Addr,
		HttpClient: cleanhttp.DefaultClient(),
		MaxRetries: 0,
		Timeout:    60 * time.Second,
	})
	if err != nil {
		panic(fmt.Sprintf("harness: vault client for %s: %v", v.Addr, err))
	}
	c.ClearNamespace() // NewClient reads VAULT_NAMESPACE and VAULT_TOKEN
	c.ClearToken()
	if token != "" {
		c.SetToken(token)
	}
	return c
}

// CLIError is a failed `vault` command.
type CLIError struct {
	Args     []string
	ExitCode int
	Stdout   string
	Stderr   string
	Err      error
}

func (e *CLIError) Error() string {
	return fmt.Sprintf("vault %s: %v (exit %d)\n%s%s", strings.Join(e.Args, " "), e.Err, e.ExitCode, e.Stderr, e.Stdout)
}

func (e *CLIError) Unwrap() error { return e.Err }

// CLI runs the vault CLI against the server with the root token and returns
// its standard output. A failure is a *CLIError holding the exit code and
// both outputs (Vault prints its errors on standard error).
func (v *Vault) CLI(tb testing.TB, args ...string) (string, error) {
	tb.Helper()
	return v.CLIWith(tb, CLIOptions{Token: v.Token}, args...)
}

// CLIWithToken is CLI with another token, for policy tests.
func (v *Vault) CLIWithToken(tb testing.TB, token string, args ...string) (string, error) {
	tb.Helper()
	return v.CLIWith(tb, CLIOptions{Token: token}, args...)
}

// CLIOptions are the settings of one CLI command.
type CLIOptions struct {
	// Token is VAULT_TOKEN; empty runs the command without a token.
	Token string
	// Stdin is the command's standard input (for `vault write path -`).
	Stdin string
}

// CLIWith runs the vault CLI with explicit options.
func (v *Vault) CLIWith(tb testing.TB, o CLIOptions, args ...string) (string, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	return v.cli(ctx, cliOptions{token: o.Token, stdin: o.Stdin}, args...)
}

type cliOptions struct {
	token string
	stdin string
}

func (v *Vault) cli(ctx context.Context, o cliOptions, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, v.bin, args...)
	cmd.Dir = v.home
	cmd.Env = v.env(o.token)
	cmd.Stdin = strings.NewReader(o.stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		code := -1
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		}
		return stdout.String(), &CLIError{Args: args, ExitCode: code, Stdout: stdout.String(), Stderr: stderr.String(), Err: err}
	}
	return stdout.String(), nil
}
