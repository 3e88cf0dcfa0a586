/**
 * SSRF-safe delivery against a real local HTTP server: with private targets not
 * allowed, nothing reaches it, whether the URL names it directly or through a
 * name whose DNS answer points inside (checked at every connection).
 */
import type dns from 'node:dns';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeSender } from '../../functions/adapters/webhook-sender.ts';
import { type Receiver, startReceiver } from '../support/receiver.ts';

let receiver: Receiver;

beforeAll(async () => {
  receiver = await startReceiver();
});

afterAll(async () => {
  await receiver?.close();
});

/** A DNS that answers every name with the given addresses. */
function fakeDns(...addresses: string[]): typeof dns.lookup {
  const lookup = (_host: string, options: unknown, callback: unknown) => {
    const cb = (typeof options === 'function' ? options : callback) as (e: Error | null, a: unknown, f?: number) => void;
    const all = addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
    if (typeof options === 'object' && options !== null && (options as dns.LookupOptions).all) cb(null, all);
    else cb(null, all[0]?.address, all[0]?.family);
  };
  return lookup as unknown as typeof dns.lookup;
}

const request = (url: string) => ({ url, headers: { 'content-type': 'application/json' }, body: '{}', timeoutMs: 2_000 });

describe('SSRF-safe targets', () => {
  it('refuses plain http and literal private addresses before connecting', async () => {
    const send = makeSender({ allowPrivateTargets: false });
    const port = new URL(receiver.url).port;
    expect((await send(request(`${receiver.url}/plain`))).error).toBe('https_required');
    expect((await send(request(`https://127.0.0.1:${port}/literal`))).error).toBe('forbidden_address');
    expect((await send(request(`https://[::ffff:127.0.0.1]:${port}/mapped`))).error).toBe('forbidden_address');
    expect(receiver.received).toHaveLength(0);
  });

  it('refuses a name that resolves to a private address, at the moment of connecting', async () => {
    for (const addresses of [['10.0.0.5'], ['::ffff:127.0.0.1'], ['93.184.216.34', '127.0.0.1']]) {
      const send = makeSender({ allowPrivateTargets: false, lookup: fakeDns(...addresses) });
      const result = await send(request('https://rebinding.example.test/hook'));
      expect(result).toMatchObject({ statusCode: undefined, error: 'forbidden_address' });
    }
    expect(receiver.received).toHaveLength(0);
  });

  it('reaches a local receiver when private targets are allowed (the sandbox)', async () => {
    const send = makeSender({ allowPrivateTargets: true });
    expect((await send(request(`${receiver.url}/allowed`))).statusCode).toBe(200);
    expect(receiver.received.map((d) => d.path)).toEqual(['/allowed']);
  });
});
