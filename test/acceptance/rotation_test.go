package acceptance

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/test/harness"
)

// TestRotateNow: rotate/<name> with a supplied value (api_key) and with a
// generated one answers the new version id, the previous id and the
// version number, and token/<name> serves the new value.
func TestRotateNow(t *testing.T) {
	v := harness.SharedDev(t)

	t.Run("api_key with a new value", func(t *testing.T) {
		name := newName("rot-key")
		created := cliWrite(t, v, credPath(v, name), "type=api_key", "api_key=rot-SECRET-old")
		rotated := cliWrite(t, v, v.Mount+"/rotate/"+name, "api_key=rot-SECRET-new")
		requireRotated(t, rotated, field(created.Data, "id"), "2")
		requireNoSecrets(t, "rotate answer", rotated.Raw, []string{"rot-SECRET-old", "rot-SECRET-new"})
		requireFields(t, cliRead(t, v, v.Mount+"/token/"+name).Data, map[string]string{
			"access_token": "rot-SECRET-new", "version": "2",
		})
		requireFields(t, cliRead(t, v, credPath(v, name)).Data, map[string]string{
			"id": field(rotated.Data, "id"), "version": "2",
		})
	})

	t.Run("generated", func(t *testing.T) {
		name := newName("rot-gen")
		created := cliWrite(t, v, credPath(v, name), "type=generated", "length=24")
		before := field(cliRead(t, v, v.Mount+"/token/"+name).Data, "access_token")
		rotated := cliWrite(t, v, v.Mount+"/rotate/"+name)
		requireRotated(t, rotated, field(created.Data, "id"), "2")
		after := cliRead(t, v, v.Mount+"/token/"+name)
		if got := field(after.Data, "access_token"); got == before || len(got) != 24 {
			t.Errorf("after rotation access_token = %q; want a new 24-character value (was %q)", got, before)
		}
		requireFields(t, after.Data, map[string]string{"version": "2"})
	})
}

// TestBlueGreenRotation: with a blue_green policy the previous version is
// served as token/<name>?version=previous during its grace period; a
// second rotation retires the first version; without the policy
// (immediate) there is no previous version.
func TestBlueGreenRotation(t *testing.T) {
	v := harness.SharedDev(t)
	name := newName("rot-bg")
	tokenPath := v.Mount + "/token/" + name
	created := cliWrite(t, v, credPath(v, name), "type=api_key", "api_key=bg-SECRET-1")
	policy := cliWrite(t, v, credPath(v, name)+"/rotation", "strategy=blue_green", "grace_period=10m")
	requireFields(t, policy.Data, map[string]string{"strategy": "blue_green", "grace_period": "600"})

	first := cliWrite(t, v, v.Mount+"/rotate/"+name, "api_key=bg-SECRET-2")
	requireRotated(t, first, field(created.Data, "id"), "2")
	requireFields(t, cliRead(t, v, tokenPath).Data, map[string]string{"access_token": "bg-SECRET-2", "version": "2"})
	requireFields(t, cliRead(t, v, tokenPath, "version=previous").Data, map[string]string{"access_token": "bg-SECRET-1", "version": "1"})
	requireFields(t, cliRead(t, v, tokenPath, "version=current").Data, map[string]string{"access_token": "bg-SECRET-2"})

	state := cliRead(t, v, credPath(v, name)+"/rotation")
	prev, _ := state.Data["previous_version"].(map[string]any)
	if prev == nil {
		t.Fatalf("rotation state shows no previous_version: %s", state.Raw)
	}
	requireFields(t, prev, map[string]string{"id": field(created.Data, "id"), "version": "1"})
	graceUntil, err := time.Parse(time.RFC3339, field(prev, "grace_until"))
	if left := time.Until(graceUntil); err != nil || left < 9*time.Minute || left > 10*time.Minute+5*time.Second {
		t.Errorf("grace_until %q: want about 10 minutes from now (%v)", field(prev, "grace_until"), err)
	}
	if field(state.Data, "last_rotated_at") == "" {
		t.Errorf("rotation state shows no last_rotated_at: %s", state.Raw)
	}

	// A second rotation keeps only the version it replaced.
	second := cliWrite(t, v, v.Mount+"/rotate/"+name, "api_key=bg-SECRET-3")
	requireRotated(t, second, field(first.Data, "id"), "3")
	requireFields(t, cliRead(t, v, tokenPath, "version=previous").Data, map[string]string{"access_token": "bg-SECRET-2", "version": "2"})

	// Back to immediate: the next rotation keeps nothing.
	cliWrite(t, v, credPath(v, name)+"/rotation", "strategy=immediate")
	cliWrite(t, v, v.Mount+"/rotate/"+name, "api_key=bg-SECRET-4")
	_, err = readAPIWithData(t, v, tokenPath, map[string][]string{"version": {"previous"}})
	requireError(t, err, 404, "not_found")
	requireFields(t, cliRead(t, v, tokenPath).Data, map[string]string{"access_token": "bg-SECRET-4", "version": "4"})
}

// scheduledRotationWait bounds TestScheduledRotation: Vault calls the
// plugin's PeriodicFunc about once a minute, and the policy's first
// rotation is due a minute after the credential was created, so it
// happens 60 to 120 seconds after creation.
const scheduledRotationWait = 150 * time.Second

// TestScheduledRotation (SLOW: up to 150s, about 90s on average) shows a
// policy rotating a credential on its own, from Vault's periodic calls:
// interval=1m on a generated credential. It runs in parallel with the
// package's other parallel tests; -short skips it.
func TestScheduledRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: waits for Vault's periodic call (up to 150s)")
	}
	t.Parallel()
	v := harness.SharedDev(t)
	name := newName("rot-sched")
	created := cliWrite(t, v, credPath(v, name), "type=generated", "length=32")
	before := field(cliRead(t, v, v.Mount+"/token/"+name).Data, "access_token")
	policy := cliWrite(t, v, credPath(v, name)+"/rotation", "interval=1m")
	requireFields(t, policy.Data, map[string]string{"interval": "60", "last_rotated_at": ""})
	if field(policy.Data, "next_rotation_at") == "" {
		t.Fatalf("policy shows no next_rotation_at: %s", policy.Raw)
	}

	start := time.Now()
	var state *response
	for deadline := start.Add(scheduledRotationWait); ; time.Sleep(2 * time.Second) {
		state = readAPI(t, v, credPath(v, name)+"/rotation")
		if field(state.Data, "last_rotated_at") != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no scheduled rotation within %s of setting the policy (due at %s); rotation state: %s",
				scheduledRotationWait, field(policy.Data, "next_rotation_at"), state.Raw)
		}
	}
	t.Logf("rotated by the scheduler %s after the policy was set", time.Since(start).Round(time.Second))
	requireFields(t, state.Data, map[string]string{"failures": "0", "last_error": ""})

	cred := cliRead(t, v, credPath(v, name))
	requireFields(t, cred.Data, map[string]string{"version": "2"})
	if field(cred.Data, "id") == field(created.Data, "id") {
		t.Errorf("the credential still has its first id %s after a scheduled rotation", field(created.Data, "id"))
	}
	tok := cliRead(t, v, v.Mount+"/token/"+name)
	if got := field(tok.Data, "access_token"); got == before || got == "" {
		t.Errorf("token after the scheduled rotation = %q; want a new value (was %q)", got, before)
	}
	requireFields(t, tok.Data, map[string]string{"version": "2"})
	events := cliRead(t, v, v.Mount+"/audit", "credential="+name, "action=rotate")
	if list, _ := events.Data["events"].([]any); len(list) == 0 {
		t.Errorf("the audit trail has no rotate event of %s: %s", name, events.Raw)
	}
}

// requireRotated checks a rotate/<name> answer: a new id, the previous id
// and the version.
func requireRotated(tb testing.TB, rotated *response, previousID, version string) {
	tb.Helper()
	id := field(rotated.Data, "id")
	if id == "" || id == previousID {
		tb.Errorf("rotate answered id %q; want a new version id (previous %q)", id, previousID)
	}
	requireFields(tb, rotated.Data, map[string]string{"previous_id": previousID, "version": version})
}

// readAPI reads a path through the HTTP API with the root token.
func readAPI(tb testing.TB, v *harness.Vault, path string) *response {
	tb.Helper()
	return mustRead(tb, apiDriver{c: v.Client()}, path)
}

// readAPIWithData reads a path with query parameters through the HTTP API
// with the root token; errors are *vaultError.
func readAPIWithData(tb testing.TB, v *harness.Vault, path string, query map[string][]string) (*response, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	resp, err := v.Client().Logical().ReadRawWithDataWithContext(ctx, path, query)
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
