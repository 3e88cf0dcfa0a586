import { Webhook } from 'standardwebhooks';
import { describe, expect, it } from 'vitest';
import { liveSecrets } from '../../functions/core/model.ts';
import { deliveryHeaders, generateSecret, sign } from '../../functions/core/signing.ts';

const body = JSON.stringify({ webhook: 'wh_x', events: [{ id: 'evt_1', seq: 1 }] });
const now = () => Math.floor(Date.now() / 1000);

function verify(secret: string, headers: Record<string, string>, payload = body) {
  return new Webhook(secret).verify(payload, headers);
}

describe('signing', () => {
  it('produces signatures the standardwebhooks library accepts', () => {
    const secret = generateSecret();
    const headers = deliveryHeaders([secret], 'msg_abc', now(), body, '1.2.3');
    expect(verify(secret, { ...headers })).toEqual(JSON.parse(body));
    expect(headers['user-agent']).toBe('sluice/1.2.3');
    expect(headers['content-type']).toBe('application/json');
  });

  it('is rejected for a tampered body, another secret or another message id', () => {
    const secret = generateSecret();
    const ts = now();
    const headers = { ...deliveryHeaders([secret], 'msg_abc', ts, body, '1') };
    expect(() => verify(secret, headers, body.replace('evt_1', 'evt_2'))).toThrow();
    expect(() => verify(generateSecret(), headers)).toThrow();
    expect(() => verify(secret, { ...headers, 'webhook-id': 'msg_other' })).toThrow();
  });

  it('carries one signature per live secret, each verifiable alone (rotation)', () => {
    const oldSecret = generateSecret();
    const newSecret = generateSecret();
    const headers = { ...deliveryHeaders([newSecret, oldSecret], 'msg_rot', now(), body, '1') };
    expect(headers['webhook-signature'].split(' ')).toHaveLength(2);
    expect(verify(newSecret, headers)).toBeTruthy();
    expect(verify(oldSecret, headers)).toBeTruthy();
  });

  it('matches a known HMAC-SHA256 vector', () => {
    // key = bytes 0x00..0x1f; HMAC over "msg_1.1700000000.{}" computed independently with openssl.
    const secret = `whsec_${Buffer.from(Array.from({ length: 32 }, (_, i) => i)).toString('base64')}`;
    expect(sign(secret, 'msg_1', 1_700_000_000, '{}')).toBe('v1,fhksJF5ElKjlPoT/jtefCO5XjQPvhf7Dhf/8R1ad9yU=');
    expect(() => sign('nope', 'msg_1', 1, '{}')).toThrow(/whsec_/);
  });
});

describe('live secrets', () => {
  it('are the newest and each replaced one until its own expiry, in order', () => {
    const webhook = { secrets: ['whsec_c', 'whsec_b', 'whsec_a'], previousSecretsExpireAt: [2_000, 1_000] };
    expect(liveSecrets(webhook, 500)).toEqual(['whsec_c', 'whsec_b', 'whsec_a']);
    expect(liveSecrets(webhook, 1_000)).toEqual(['whsec_c', 'whsec_b']);
    expect(liveSecrets(webhook, 2_000)).toEqual(['whsec_c']);
    // A replaced secret with no expiry (an item written before expiries were kept per secret) signs no more.
    expect(liveSecrets({ secrets: ['whsec_b', 'whsec_a'], previousSecretsExpireAt: [] }, 0)).toEqual(['whsec_b']);
  });
});
