import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { decodeSyncToken, encodeSyncToken, positionAt } from '../../functions/core/stream-token.ts';

const key = randomBytes(32);
const stream = { tenantId: 'ten_a', resource: 'project:7' };
const token = encodeSyncToken(key, { ...stream, position: positionAt(1_800_000_000_000), issuedAt: 1_800_000_003_000, retentionMs: 1 });

describe('sync tokens', () => {
  it('gives back the position of a token as it was handed out', () => {
    expect(decodeSyncToken(key, token, stream.tenantId, stream.resource)).toEqual({
      ...stream,
      position: positionAt(1_800_000_000_000),
      issuedAt: 1_800_000_003_000,
      retentionMs: 1,
    });
  });

  it('refuses a token whose signature was changed, even where base64 decodes it to the same bytes', () => {
    // A 32-byte HMAC is 43 base64url characters, whose last carries 2 unused bits, and
    // Node's decoder skips characters outside the alphabet: read leniently, these all
    // decoded to the signature and were accepted, though README says a changed token is refused.
    const [payload, mac = ''] = token.split('.');
    const last = mac.at(-1) ?? '';
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const sameBits = alphabet.slice(alphabet.indexOf(last) & ~3, (alphabet.indexOf(last) & ~3) + 4).replace(last, '');
    const changed = [
      ...[...sameBits].map((c) => `${payload}.${mac.slice(0, -1)}${c}`),
      `${token}==`,
      `${token}~`,
      `${payload}.${mac.slice(0, 10)}!${mac.slice(10)}`,
      `${payload}.${mac.slice(0, 10)}\n${mac.slice(10)}`,
    ];
    expect(changed).toHaveLength(7);
    for (const edited of changed) expect(decodeSyncToken(key, edited, stream.tenantId, stream.resource), edited).toBeUndefined();
  });

  it('refuses a truncated token, another stream’s, another tenant’s and one signed with another key', () => {
    expect(decodeSyncToken(key, token.slice(0, -1), stream.tenantId, stream.resource)).toBeUndefined();
    expect(decodeSyncToken(key, token.split('.')[0] ?? '', stream.tenantId, stream.resource)).toBeUndefined();
    expect(decodeSyncToken(key, token, stream.tenantId, 'project:8')).toBeUndefined();
    expect(decodeSyncToken(key, token, 'ten_b', stream.resource)).toBeUndefined();
    expect(decodeSyncToken(randomBytes(32), token, stream.tenantId, stream.resource)).toBeUndefined();
  });
});
