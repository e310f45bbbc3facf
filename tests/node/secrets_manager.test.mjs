// The AWS SDK for JavaScript v3 (@aws-sdk/client-secrets-manager, @aws-sdk/client-kms)
// against a development arca, with only the endpoint overridden: create -> get -> rotate -> get.
//
// Run by tests/node_clients.rs, which starts the server and sets ARCA_ADDR.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  CreateKeyCommand,
  DecryptCommand,
  EncryptCommand,
  KMSClient,
} from "@aws-sdk/client-kms";
import {
  CreateSecretCommand,
  DeleteSecretCommand,
  DescribeSecretCommand,
  GetSecretValueCommand,
  ResourceNotFoundException,
  RotateSecretCommand,
  SecretsManagerClient,
} from "@aws-sdk/client-secrets-manager";

const endpoint = process.env.ARCA_ADDR;
assert.ok(endpoint, "ARCA_ADDR must name the arca server");

const config = {
  endpoint,
  region: "us-east-1",
  credentials: { accessKeyId: "test", secretAccessKey: "test" },
  maxAttempts: 1,
};
const sm = new SecretsManagerClient(config);
const kms = new KMSClient(config);

test("create, get, rotate, get with the v3 SDKs", async () => {
  const key = await kms.send(new CreateKeyCommand({ Description: "node test key" }));
  const keyId = key.KeyMetadata.KeyId;

  // A KMS round trip with the same client configuration.
  const plaintext = new TextEncoder().encode("kms from node");
  const encrypted = await kms.send(
    new EncryptCommand({ KeyId: keyId, Plaintext: plaintext, EncryptionContext: { app: "node" } }),
  );
  const decrypted = await kms.send(
    new DecryptCommand({ CiphertextBlob: encrypted.CiphertextBlob, EncryptionContext: { app: "node" } }),
  );
  assert.equal(new TextDecoder().decode(decrypted.Plaintext), "kms from node");

  // A secret arca generates (an API key), encrypted under the customer key.
  const created = await sm.send(
    new CreateSecretCommand({
      Name: "node/api-key",
      KmsKeyId: keyId,
      Description: "made by the JavaScript SDK",
      Tags: [{ Key: "arca:type", Value: "api_key" }],
    }),
  );
  assert.match(created.ARN, /^arn:aws:secretsmanager:us-east-1:123456789012:secret:node\/api-key-[A-Za-z0-9]{6}$/);

  const first = await sm.send(new GetSecretValueCommand({ SecretId: "node/api-key" }));
  assert.equal(first.VersionId, created.VersionId);
  assert.deepEqual(first.VersionStages, ["AWSCURRENT"]);
  const firstKey = JSON.parse(first.SecretString).api_key;
  assert.match(firstKey, /^ak_[0-9A-Za-z]{32}_[0-9a-f]{8}$/);

  // Rotation with the built-in rotator: a new value becomes AWSCURRENT.
  const rotated = await sm.send(new RotateSecretCommand({ SecretId: created.ARN }));
  assert.notEqual(rotated.VersionId, created.VersionId);

  const second = await sm.send(new GetSecretValueCommand({ SecretId: "node/api-key" }));
  assert.equal(second.VersionId, rotated.VersionId);
  const secondKey = JSON.parse(second.SecretString).api_key;
  assert.match(secondKey, /^ak_[0-9A-Za-z]{32}_[0-9a-f]{8}$/);
  assert.notEqual(secondKey, firstKey);

  const previous = await sm.send(
    new GetSecretValueCommand({ SecretId: "node/api-key", VersionStage: "AWSPREVIOUS" }),
  );
  assert.equal(JSON.parse(previous.SecretString).api_key, firstKey);

  const described = await sm.send(new DescribeSecretCommand({ SecretId: created.ARN }));
  assert.ok(described.LastRotatedDate instanceof Date);
  assert.equal(described.KmsKeyId, keyId);

  // The SDK's typed errors work too.
  await sm.send(new DeleteSecretCommand({ SecretId: created.ARN, ForceDeleteWithoutRecovery: true }));
  await assert.rejects(
    sm.send(new GetSecretValueCommand({ SecretId: "node/api-key" })),
    (err) => err instanceof ResourceNotFoundException && err.name === "ResourceNotFoundException",
  );
});
