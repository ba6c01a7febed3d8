package nebula

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/nebula-credential/nebula-credential/internal/upstream"
)

func TestUpstreamConcurrencyPerHostConfig(t *testing.T) {
	c := DefaultConfig()
	require.Equal(t, upstream.DefaultConcurrencyPerHost, c.UpstreamConcurrencyPerHost)
	require.NoError(t, c.validate())
	for _, bad := range []int{0, -1, 1025} {
		c.UpstreamConcurrencyPerHost = bad
		require.ErrorContains(t, c.validate(), `"upstream_concurrency_per_host" must be between 1 and 1024`, bad)
	}
}
