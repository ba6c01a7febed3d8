package acceptance

import (
	"testing"

	"github.com/nebula-credential/nebula-credential/test/harness"
)

// TestDataSurvivesRestart: on a server with file storage, a credential
// (its metadata and its seal-wrapped secret version) is still there, with
// the same id, after Vault stops, starts again and is unsealed.
func TestDataSurvivesRestart(t *testing.T) {
	v := harness.StartFile(t)
	name := newName("restart")
	path := credPath(v, name)
	secret := "rs-SECRET-1"
	created := mustWrite(t, apiDriver{c: v.Client()}, path, map[string]any{
		"type": "api_key", "api_key": secret, "description": "survives", "tags": []string{"durable"},
	})
	// A second version, so the restart also shows the current version
	// (not the first one) is what comes back.
	rotated := mustWrite(t, apiDriver{c: v.Client()}, path, map[string]any{"api_key": secret + "-2"})
	want := map[string]string{
		"id": field(rotated.Data, "id"), "version": "2", "type": "api_key",
		"description": "survives", "tags": "durable",
		"created_at": field(created.Data, "created_at"),
	}

	v.Restart(t)

	for _, d := range drivers(v, v.Token) {
		t.Run(d.Name(), func(t *testing.T) {
			read := mustRead(t, d, path)
			requireFields(t, read.Data, want)
			requireNoSecrets(t, "read after restart", read.Raw, []string{secret})
			names, err := d.List(t, v.Mount+"/creds/")
			if err != nil || len(names) != 1 || names[0] != name {
				t.Errorf("list after restart = %v, %v; want [%s]", names, err, name)
			}
		})
	}

	// The restarted mount still takes writes.
	mustWrite(t, apiDriver{c: v.Client()}, path, map[string]any{"description": "after restart"})
}
