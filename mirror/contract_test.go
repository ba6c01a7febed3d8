package mirror

import (
	"context"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// targetFake is what the target contract needs of a provider's fake: read
// what the target stored, see the calls it made, and make the provider fail,
// throttle, go away or hold secrets of others. Adapters over mirrortest's
// fakes implement it (awsContractFake, azureContractFake).
type targetFake interface {
	// Stored returns the value and the engine version tag of the secret
	// that mirrors credential name; ok is false when there is none.
	Stored(name string) (value, version string, ok bool)
	// Calls returns the operations the fake ran since the last ResetCalls.
	Calls() []string
	// ResetCalls forgets the operations recorded so far.
	ResetCalls()
	// Lookup returns the call that reads the secret of credential name: the
	// only call of a Put that finds a newer version stored.
	Lookup(name string) string
	// FailWrites makes the fake answer status, a server error, to the
	// requests that write (and possibly to others) until Heal.
	FailWrites(status int)
	// Throttle makes the fake answer every request as throttled until Heal,
	// and returns the error code the target then reports.
	Throttle() (code string)
	// Heal restores normal answers after FailWrites or Throttle.
	Heal()
	// Stop takes the fake down (connections refused); Start brings it back
	// on the same address with its secrets.
	Stop()
	Start()
	// PlantForeign stores value as the secret of credential name, made by
	// other tooling: untagged when owner is empty, else tagged as mirroring
	// credential owner at version 1.
	PlantForeign(name, owner, value string)
	// MaxSecretSize is the largest content, in bytes, the provider stores.
	MaxSecretSize() int
	// TooLongName returns a credential name whose secret name the provider
	// cannot hold.
	TooLongName() string
}

// runTargetContract runs the behaviour every Target shares, one subtest a
// scenario, each on a fresh fake from newFake and a target on it from
// newTarget.
func runTargetContract[F targetFake](t *testing.T, newTarget func(testing.TB, F) Target, newFake func(testing.TB) F) {
	scenarios := []struct {
		name string
		run  func(*testing.T, Target, F)
	}{
		{"Ordering", contractOrdering[F]},
		{"ConcurrentPutsEndWithLatest", contractConcurrentPuts[F]},
		{"TargetDownThenUp", contractDownThenUp[F]},
		{"ThrottlingIsRetryable", contractThrottling[F]},
		{"ServerClosedThenBack", contractClosedThenBack[F]},
		{"ForeignSecretIsNotTouched", contractForeignSecret[F]},
		{"InvalidPut", contractInvalidPut[F]},
	}
	for _, s := range scenarios {
		t.Run(s.name, func(t *testing.T) {
			f := newFake(t)
			s.run(t, newTarget(t, f), f)
		})
	}
}

// assertStored checks that the secret of credential name holds content at
// engine version version.
func assertStored(tb testing.TB, f targetFake, name string, content []byte, version int, msgAndArgs ...any) {
	tb.Helper()
	value, tag, _ := f.Stored(name)
	assert.Equal(tb, string(content), value, msgAndArgs...)
	assert.Equal(tb, strconv.Itoa(version), tag, msgAndArgs...)
}

// contractOrdering: an older version writes nothing, the same version is
// written again (its content may have changed), a newer one is written.
func contractOrdering[F targetFake](t *testing.T, target Target, f F) {
	ctx := context.Background()
	require.NoError(t, target.Put(ctx, "ordered", 3, testContent(3)))
	f.ResetCalls()
	require.NoError(t, target.Put(ctx, "ordered", 2, testContent(2)), "an older version is not an error")
	assertStored(t, f, "ordered", testContent(3), 3, "older version did not overwrite")
	assert.Equal(t, []string{f.Lookup("ordered")}, f.Calls(), "nothing written")

	// The same version with new content (a refreshed token) is written.
	refreshed := []byte(`{"access_token":"refreshed"}`)
	require.NoError(t, target.Put(ctx, "ordered", 3, refreshed))
	assertStored(t, f, "ordered", refreshed, 3, "same version with new content is written")

	require.NoError(t, target.Put(ctx, "ordered", 4, testContent(4)))
	assertStored(t, f, "ordered", testContent(4), 4)
}

// contractConcurrentPuts: puts of all versions at once, in random order,
// leave the latest stored.
func contractConcurrentPuts[F targetFake](t *testing.T, target Target, f F) {
	const n = 12
	var wg sync.WaitGroup
	for _, v := range rand.Perm(n) {
		wg.Add(1)
		go func(v int) {
			defer wg.Done()
			assert.NoError(t, target.Put(context.Background(), "busy", v+1, testContent(v+1)))
		}(v)
	}
	wg.Wait()
	assertStored(t, f, "busy", testContent(n), n)
}

// contractDownThenUp: server errors are retryable, and the put retried once
// the provider is back loses nothing.
func contractDownThenUp[F targetFake](t *testing.T, target Target, f F) {
	ctx := context.Background()
	require.NoError(t, target.Put(ctx, "flaky", 1, testContent(1)))

	for _, status := range []int{500, 503} {
		f.FailWrites(status)
		err := target.Put(ctx, "flaky", 2, testContent(2))
		e := assertMirrorError(t, err, KindUnreachable, true, "upstream failed")
		assert.Equal(t, status, e.Status)
	}

	f.Heal()
	require.NoError(t, target.Put(ctx, "flaky", 2, testContent(2)))
	assertStored(t, f, "flaky", testContent(2), 2, "no lost update")
}

// contractThrottling: a throttled put is retryable and keeps the provider's
// code.
func contractThrottling[F targetFake](t *testing.T, target Target, f F) {
	code := f.Throttle()
	err := target.Put(context.Background(), "busy", 1, testContent(1))
	e := assertMirrorError(t, err, KindThrottled, true, "upstream failed")
	assert.Equal(t, code, e.Code)
}

// contractClosedThenBack: a refused connection is retryable, and the put
// retried once the server is back loses nothing.
func contractClosedThenBack[F targetFake](t *testing.T, target Target, f F) {
	ctx := context.Background()
	require.NoError(t, target.Put(ctx, "flaky", 1, testContent(1)))

	f.Stop()
	err := target.Put(ctx, "flaky", 2, testContent(2))
	e := assertMirrorError(t, err, KindUnreachable, true)
	assert.Equal(t, "connection_failed", e.Code)
	assert.Contains(t, e.Error(), "connection refused")

	f.Start()
	require.NoError(t, target.Put(ctx, "flaky", 2, testContent(2)))
	assertStored(t, f, "flaky", testContent(2), 2, "no lost update")
}

// contractForeignSecret: a secret the engine did not make, untagged or
// tagged for another credential, is neither overwritten nor deleted.
func contractForeignSecret[F targetFake](t *testing.T, target Target, f F) {
	f.PlantForeign("theirs", "", "keep")
	f.PlantForeign("other", "someone-else", "keep")

	for _, name := range []string{"theirs", "other"} {
		err := target.Put(context.Background(), name, 9, testContent(9))
		e := assertMirrorError(t, err, KindForeign, false)
		assert.Equal(t, "not_managed", e.Code)
		err = target.Delete(context.Background(), name)
		assertMirrorError(t, err, KindForeign, false)
		value, _, ok := f.Stored(name)
		require.True(t, ok)
		assert.Equal(t, "keep", value)
	}
}

// contractInvalidPut: a put the target can tell is invalid fails, permanent,
// before any request.
func contractInvalidPut[F targetFake](t *testing.T, target Target, f F) {
	ctx := context.Background()
	tests := map[string]struct {
		name    string
		version int
		content []byte
		code    string
	}{
		"not json":         {"invalid", 1, []byte("token=" + testSecret), "invalid_content"},
		"plain secret":     {"invalid", 1, []byte(testSecret), "invalid_content"},
		"empty":            {"invalid", 1, nil, "invalid_content"},
		"negative version": {"invalid", -1, testContent(1), "invalid_version"},
		"too large":        {"invalid", 1, []byte(`"` + strings.Repeat("x", f.MaxSecretSize()) + `"`), "content_too_large"},
		"name too long":    {f.TooLongName(), 1, testContent(1), "invalid_name"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := target.Put(ctx, tc.name, tc.version, tc.content)
			e := assertMirrorError(t, err, KindInvalid, false)
			assert.Equal(t, tc.code, e.Code)
		})
	}
	assert.Empty(t, f.Calls(), "nothing sent")
}
