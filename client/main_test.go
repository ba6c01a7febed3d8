package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/client"
	"github.com/nebula-credential/nebula-credential/test/harness"
)

// TestMain shares one Vault dev server (the engine mounted at nebula/)
// between the package's tests; each test uses its own credential names.
func TestMain(m *testing.M) { harness.Main(m) }

// requestTimeout bounds one test's calls.
const requestTimeout = 2 * time.Minute

var nameSeq atomic.Int64

// newName returns a name unique in this test binary.
func newName(base string) string { return fmt.Sprintf("%s-%d", base, nameSeq.Add(1)) }

var setup struct {
	once sync.Once
	err  error
}

// newClient returns a client of the shared dev server's nebula/ mount with
// the root token. The mount allows plain http to 127.0.0.1, for the
// loopback OAuth2 server and webhooks.
func newClient(t *testing.T) (*client.Client, *harness.Vault) {
	t.Helper()
	v := harness.SharedDev(t)
	c := client.New(v.Client())
	setup.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		cfg, err := c.Config(ctx)
		if err != nil {
			setup.err = err
			return
		}
		cfg.InsecureHTTPHosts = []string{"127.0.0.1"}
		_, setup.err = c.SetConfig(ctx, *cfg)
	})
	if setup.err != nil {
		t.Fatalf("configuring nebula/: %v", setup.err)
	}
	return c, v
}

// newMount mounts the engine at a path of the test's own (unmounted when
// the test ends) and returns a client of it, configured like nebula/.
func newMount(t *testing.T, v *harness.Vault) *client.Client {
	t.Helper()
	mount := newName("nebula-client")
	if _, err := v.CLI(t, "secrets", "enable", "-path="+mount, "-plugin-version="+v.Plugin.Version, v.Plugin.Name); err != nil {
		t.Fatalf("mounting the plugin at %s/: %v", mount, err)
	}
	t.Cleanup(func() {
		if _, err := v.CLI(t, "secrets", "disable", mount); err != nil {
			t.Errorf("unmounting %s/: %v", mount, err)
		}
	})
	c := client.New(v.Client(), client.WithMount("/"+mount+"/"))
	cfg, err := c.Config(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.InsecureHTTPHosts = []string{"127.0.0.1"}
	if _, err := c.SetConfig(testContext(t), *cfg); err != nil {
		t.Fatal(err)
	}
	return c
}

// testContext is a context that ends with the test or after
// requestTimeout.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// requireKind checks that err is an *Error of kind with the status and
// code the engine's error table gives it.
func requireKind(t *testing.T, err error, kind client.Kind, sentinel error) *client.Error {
	t.Helper()
	return requireKindCode(t, err, kind, sentinel, kind.String())
}

// requireKindCode is requireKind for an error whose message has the code
// given ("" for Vault's own uncoded messages).
func requireKindCode(t *testing.T, err error, kind client.Kind, sentinel error, code string) *client.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want %v", kind)
	}
	var e *client.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *client.Error; want %v", err, err, kind)
	}
	if e.Kind != kind {
		t.Fatalf("kind = %v, want %v (error: %v)", e.Kind, kind, err)
	}
	if !errors.Is(err, sentinel) {
		t.Errorf("errors.Is(%v, %v) is false", err, sentinel)
	}
	if client.ErrorKind(err) != kind {
		t.Errorf("ErrorKind = %v, want %v", client.ErrorKind(err), kind)
	}
	if e.Status != kind.Status() {
		t.Errorf("status = %d, want %d (error: %v)", e.Status, kind.Status(), err)
	}
	if e.Code != code {
		t.Errorf("code = %q, want %q", e.Code, code)
	}
	if e.Message == "" {
		t.Errorf("error %v has no message", err)
	}
	return e
}

// closedURL returns an http URL on 127.0.0.1 where nothing listens.
func closedURL(t *testing.T, path string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr + path
}
