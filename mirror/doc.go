// Package mirror writes copies of credentials to external secret stores:
// AWS Secrets Manager and Azure Key Vault.
//
// The engine calls a Target with a credential's content (a JSON document: its
// ready-to-use token or its secret fields) and the engine's version number of
// that credential. Each target keeps the engine version on the remote secret
// (AWS tag "nebula:version", Key Vault tag "nebula-version") and compares it
// before writing, so a retried or reordered write of an older version never
// replaces a newer one:
//
//   - a Put whose version is older than the remote one changes nothing and
//     returns nil (the target already holds something newer);
//   - a Put whose version equals the remote one is written again on AWS (the
//     content of one engine version may change, e.g. a refreshed token;
//     DescribeSecret does not show the value) and on Key Vault only when the
//     content, content type or a configured tag differs (GetSecret returns
//     the value, so a retried Put creates no new version);
//   - Puts of one credential from one process are serialized; the check and
//     the write are two requests, so two processes writing the same remote
//     secret at once are not ordered (Vault runs the engine's writes on the
//     active node only).
//
// Remote secrets carry an ownership tag (AWS "nebula:credential", Key Vault
// "nebula-credential") naming the credential. A target never overwrites or
// deletes a secret that lacks it or names another credential: such a name
// collision is reported as a permanent *Error of kind KindForeign. To adopt a
// secret created by other tooling, add the tag to it.
//
// Errors returned by targets are *Error values that say whether a retry can
// help. They never contain secret content or upstream response bodies.
//
// # Deletion
//
// AWS: Delete calls DeleteSecret with ForceDeleteWithoutRecovery, unless
// AWSConfig.RecoveryWindowDays is set (7 to 30): then it removes the version
// tag and schedules the deletion; a Put for the same name within the window
// restores the secret (RestoreSecret) and writes over it.
//
// Azure: Delete removes the version tag from the current version and calls
// DeleteSecret. Key Vault soft-deletes (all vaults have soft delete); the
// target never purges. A Put for the same name while the secret is
// soft-deleted recovers it (RecoverDeletedSecret), waits for the recovery and
// writes over it.
//
// # Permissions
//
// AWS (IAM actions on arn:aws:secretsmanager:REGION:ACCOUNT:secret:nebula/*,
// or the prefix of the name template):
//
//   - secretsmanager:DescribeSecret, secretsmanager:CreateSecret,
//     secretsmanager:PutSecretValue, secretsmanager:TagResource (needed also
//     by CreateSecret with tags), secretsmanager:DeleteSecret;
//   - with RecoveryWindowDays: secretsmanager:UntagResource, and
//     secretsmanager:RestoreSecret (also needed without it to write a secret
//     someone else scheduled for deletion);
//   - with KMSKeyID (a customer managed key), on the key: kms:GenerateDataKey
//     and kms:Decrypt (Secrets Manager acts for the caller when it encrypts a
//     new value);
//   - with RoleARN: sts:AssumeRole on the role for the base credentials, and
//     the role's trust policy allowing them; the permissions above then
//     belong to the role.
//
// Azure Key Vault, RBAC permission model: the "Key Vault Secrets Officer"
// role on the vault (a new secret cannot be scoped in advance). Access policy model: secret
// permissions Get, Set, Delete, List (GetDeletedSecret) and Recover. Purge
// is not needed.
package mirror
