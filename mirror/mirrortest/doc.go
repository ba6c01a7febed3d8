// Package mirrortest provides loopback fakes of the secret stores package
// mirror writes to, for tests of mirror and of the packages that use it.
//
// AWS is AWS Secrets Manager (JSON 1.1 protocol) with SigV4 verification
// and an STS AssumeRole endpoint, served over plain HTTP on 127.0.0.1. Azure
// is an Azure Key Vault secrets endpoint (REST over TLS) with the vault's
// bearer challenge and a minimal Entra ID token endpoint. Both are driven
// through the real SDK clients: they keep secrets in memory, record the
// operations they accepted, can be made to fail (FailWith) and can go down
// and come back on the same address (Stop, Start).
//
// Each fake is stopped when the test that created it ends. Every method is
// safe for concurrent use.
//
// The package does not import package mirror, so mirror's own tests can use
// it; the tag names the targets write are repeated here as literals.
package mirrortest

// Tags package mirror writes on remote secrets (mirror.AWSTagVersion,
// mirror.AWSTagCredential, mirror.AzureTagVersion, mirror.AzureTagCredential),
// repeated here because mirrortest must not import mirror. mirror's tests
// check through EngineVersion and Credential that they agree.
const (
	awsTagVersion      = "nebula:version"
	awsTagCredential   = "nebula:credential"
	azureTagVersion    = "nebula-version"
	azureTagCredential = "nebula-credential"
)
