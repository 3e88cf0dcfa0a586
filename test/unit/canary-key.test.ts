/**
 * The canary's API key in Secrets Manager: the real Secrets Manager client against a
 * local HTTP server that answers GetSecretValue and PutSecretValue as Secrets Manager
 * does (there is no emulator of it to run).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { SecretCanaryKey } from '../../functions/adapters/canary-key.ts';

const ARN = 'arn:aws:secretsmanager:us-east-1:1:secret:canary-key';
/** Keys shaped as the tenants service makes them (functions/core/keys.ts). */
const FIRST_KEY = `sk_${'a'.repeat(43)}`;
const SECOND_KEY = `sk_${'b'.repeat(43)}`;
const ADMIN_KEY = `ak_${'c'.repeat(43)}`;
let server: http.Server;
let client: SecretsManagerClient;
/** The secret's current value, and every request the server answered: its operation and body. */
let value: string;
let requests: Array<{ operation: string; body: Record<string, unknown> }>;

beforeAll(async () => {
  server = http.createServer((req, res) => {
    let text = '';
    req.on('data', (chunk) => {
      text += chunk;
    });
    req.on('end', () => {
      const operation = String(req.headers['x-amz-target']).replace('secretsmanager.', '');
      const body = JSON.parse(text) as Record<string, unknown>;
      requests.push({ operation, body });
      res.writeHead(200, { 'content-type': 'application/x-amz-json-1.1' });
      if (operation === 'PutSecretValue') {
        value = String(body.SecretString);
        return res.end(JSON.stringify({ ARN, Name: 'canary-key', VersionId: 'v2' }));
      }
      res.end(JSON.stringify({ ARN, Name: 'canary-key', SecretString: value }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  client = new SecretsManagerClient({
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    region: 'us-east-1',
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    maxAttempts: 1,
  });
});

afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

beforeEach(() => {
  // What the stack creates: a generated placeholder, not JSON.
  value = 'Xq7vB2rT9mKp4sWz';
  requests = [];
});

describe("the canary's key in Secrets Manager", () => {
  it("reads the stack's placeholder as no key yet, and a value that is not a tenant key as none either", async () => {
    expect(await new SecretCanaryKey(client, ARN).get()).toBeUndefined();
    value = JSON.stringify({ apiKey: ADMIN_KEY });
    expect(await new SecretCanaryKey(client, ARN).get()).toBeUndefined();
    expect(requests.map((r) => [r.operation, r.body.SecretId])).toEqual([
      ['GetSecretValue', ARN],
      ['GetSecretValue', ARN],
    ]);
  });

  it('writes the key as JSON to its secret, and a new container reads it back once', async () => {
    await new SecretCanaryKey(client, ARN).put(FIRST_KEY);
    expect(requests).toEqual([{ operation: 'PutSecretValue', body: expect.objectContaining({ SecretId: ARN }) }]);
    expect(JSON.parse(value)).toEqual({ apiKey: FIRST_KEY });

    const next = new SecretCanaryKey(client, ARN);
    expect(await next.get()).toBe(FIRST_KEY);
    expect(await next.get()).toBe(FIRST_KEY);
    expect(requests.filter((r) => r.operation === 'GetSecretValue')).toHaveLength(1);
  });

  it('keeps what it wrote without reading it again', async () => {
    const keys = new SecretCanaryKey(client, ARN);
    expect(await keys.get()).toBeUndefined();
    await keys.put(SECOND_KEY);
    expect(await keys.get()).toBe(SECOND_KEY);
    expect(requests.map((r) => r.operation)).toEqual(['GetSecretValue', 'PutSecretValue']);
  });
});
