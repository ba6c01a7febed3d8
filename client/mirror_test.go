package client_test

import (
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/nebula-credential/nebula-credential/client"
)

// TestMirrorConfig: the AWS and Azure targets' configuration round-trips
// through a real Vault without its secrets; a deleted target answers
// not_found; the status of a mount without mirrored credentials is empty.
func TestMirrorConfig(t *testing.T) {
	t.Parallel()
	_, v := newClient(t)
	c := newMount(t, v)
	ctx := testContext(t)

	_, err := c.MirrorAWS(ctx)
	requireKind(t, err, client.NotFound, client.ErrNotFound)
	aws, err := c.SetMirrorAWS(ctx, client.AWSMirror{
		Region: "eu-west-1", AccessKey: "AKIAEXAMPLE", SecretKey: client.NewSecret("mirror-SECRET-aws"),
		NameTemplate: "apps/<name>", Tags: map[string]string{"team": "ops"},
	})
	if err != nil {
		t.Fatalf("SetMirrorAWS: %v", err)
	}
	if aws.Region != "eu-west-1" || aws.AccessKey != "AKIAEXAMPLE" || !aws.SecretKeySet || !aws.SecretKey.IsZero() ||
		aws.NameTemplate != "apps/<name>" || !maps.Equal(aws.Tags, map[string]string{"team": "ops"}) {
		t.Errorf("SetMirrorAWS answered %+v", aws)
	}
	aws, err = c.SetMirrorAWS(ctx, client.AWSMirror{KMSKeyID: "alias/nebula"})
	if err != nil || aws.KMSKeyID != "alias/nebula" || aws.Region != "eu-west-1" || !aws.SecretKeySet {
		t.Errorf("a second SetMirrorAWS of one field = %+v, %v; want the other fields kept", aws, err)
	}
	if got, err := c.MirrorAWS(ctx); err != nil || got.KMSKeyID != "alias/nebula" || got.AccessKey != "AKIAEXAMPLE" {
		t.Errorf("MirrorAWS = %+v, %v", got, err)
	}
	_, err = c.SetMirrorAWS(ctx, client.AWSMirror{Region: "not a region"})
	requireKind(t, err, client.InvalidInput, client.ErrInvalidInput)

	azure, err := c.SetMirrorAzure(ctx, client.AzureMirror{
		VaultURL: "https://nebula-test.vault.azure.net/", TenantID: "contoso.onmicrosoft.com", ClientID: "6f1c2a4e-8a35-4c1b-9a7e-2f5d8b0c1e37", ClientSecret: client.NewSecret("mirror-SECRET-azure"),
	})
	if err != nil {
		t.Fatalf("SetMirrorAzure: %v", err)
	}
	if azure.VaultURL != "https://nebula-test.vault.azure.net/" || azure.ClientID != "6f1c2a4e-8a35-4c1b-9a7e-2f5d8b0c1e37" || !azure.ClientSecretSet || !azure.ClientSecret.IsZero() {
		t.Errorf("SetMirrorAzure answered %+v", azure)
	}
	if got, err := c.MirrorAzure(ctx); err != nil || got.TenantID != "contoso.onmicrosoft.com" || strings.Contains(got.ClientSecret.Value(), "SECRET") {
		t.Errorf("MirrorAzure = %+v, %v", got, err)
	}

	status, err := c.MirrorStatus(ctx)
	if err != nil || len(status) != 0 {
		t.Errorf("MirrorStatus of a mount without mirrored credentials = %+v, %v", status, err)
	}

	if err := c.DeleteMirrorAWS(ctx); err != nil {
		t.Fatalf("DeleteMirrorAWS: %v", err)
	}
	_, err = c.MirrorAWS(ctx)
	requireKind(t, err, client.NotFound, client.ErrNotFound)
	if err := c.DeleteMirrorAzure(ctx); err != nil {
		t.Fatalf("DeleteMirrorAzure: %v", err)
	}
	_, err = c.MirrorAzure(ctx)
	requireKind(t, err, client.NotFound, client.ErrNotFound)
}

// TestMirrorStatusShape: MirrorStatus decodes the engine's mirror/status
// answer (as the engine sends it: last_synced_at null when never synced).
func TestMirrorStatusShape(t *testing.T) {
	t.Parallel()
	lv := newLoopVault(t, func(int, loopRequest) loopAnswer {
		return loopAnswer{200, `{"data":{"status":[
			{"name":"gh","target":"aws","sync_status":"synced","last_synced_at":"2026-12-01T08:00:00Z","last_error":""},
			{"name":"gh","target":"azure","sync_status":"error","last_synced_at":null,"last_error":"unavailable: Key Vault answered 503"}]}}`}
	})
	status, err := lv.client(t).MirrorStatus(testContext(t))
	if err != nil || len(status) != 2 {
		t.Fatalf("MirrorStatus = %+v, %v", status, err)
	}
	want := []client.MirrorSync{
		{Credential: "gh", Target: client.MirrorTargetAWS, Status: client.SyncSynced, LastSyncedAt: time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)},
		{Credential: "gh", Target: client.MirrorTargetAzure, Status: client.SyncError, LastError: "unavailable: Key Vault answered 503"},
	}
	for i := range want {
		if !status[i].LastSyncedAt.Equal(want[i].LastSyncedAt) || status[i].Credential != want[i].Credential ||
			status[i].Target != want[i].Target || status[i].Status != want[i].Status || status[i].LastError != want[i].LastError {
			t.Errorf("status %d = %+v, want %+v", i, status[i], want[i])
		}
	}
	if r := lv.Requests()[0]; r.Method != "GET" || r.Path != "/v1/nebula/mirror/status" {
		t.Errorf("MirrorStatus sent %s %s", r.Method, r.Path)
	}
}
