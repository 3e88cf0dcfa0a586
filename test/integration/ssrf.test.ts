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

/**
 * A DNS that answers every name with the given addresses and counts its calls.
 * Like dns.lookup it answers an array when asked for `all`, else one address.
 */
function fakeDns(...addresses: string[]): typeof dns.lookup & { calls: number } {
  const lookup = (_host: string, options: unknown, callback: unknown) => {
    lookup.calls++;
    const cb = (typeof options === 'function' ? options : callback) as (e: Error | null, a: unknown, f?: number) => void;
    const all = addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
    if (typeof options === 'object' && options !== null && (options as dns.LookupOptions).all) cb(null, all);
    else cb(null, all[0]?.address, all[0]?.family);
  };
  lookup.calls = 0;
  return lookup as unknown as typeof dns.lookup & { calls: number };
}

const request = (url: string) => ({ url, headers: { 'content-type': 'application/json' }, body: '{}', timeoutMs: 2_000 });

describe('SSRF-safe targets', () => {
  it('refuses plain http and literal private addresses before connecting', async () => {
    // Prepare
    const lookup = fakeDns('127.0.0.1');
    const send = makeSender({ allowPrivateTargets: false, lookup });
    const port = new URL(receiver.url).port;

    // Act
    const plain = await send(request(`${receiver.url}/plain`));
    const literal = await send(request(`https://127.0.0.1:${port}/literal`));
    const mapped = await send(request(`https://[::ffff:127.0.0.1]:${port}/mapped`));
    const localhost = await send(request(`https://localhost:${port}/localhost`));

    // Assert
    expect(plain).toMatchObject({ statusCode: undefined, error: 'https_required' });
    expect(literal).toMatchObject({ statusCode: undefined, error: 'forbidden_address' });
    expect(mapped).toMatchObject({ statusCode: undefined, error: 'forbidden_address' });
    expect(localhost).toMatchObject({ statusCode: undefined, error: 'forbidden_address' });
    expect(lookup.calls).toBe(0);
    expect(receiver.received).toHaveLength(0);
  });

  it('refuses a name that resolves to a forbidden address, at the moment of connecting', async () => {
    const port = new URL(receiver.url).port;
    for (const addresses of [['10.0.0.5'], ['::ffff:127.0.0.1'], ['127.0.0.1'], ['93.184.216.34', '127.0.0.1']]) {
      // Prepare: the name points at the local receiver's port, so without the check it would connect there.
      const lookup = fakeDns(...addresses);
      const send = makeSender({ allowPrivateTargets: false, lookup });

      // Act
      const result = await send(request(`https://rebinding.example.test:${port}/hook`));

      // Assert
      expect(result, addresses.join(',')).toMatchObject({ statusCode: undefined, error: 'forbidden_address' });
      expect(lookup.calls).toBeGreaterThan(0);
    }
    expect(receiver.received).toHaveLength(0);
  });

  it('looks the name up again for every connection it opens (no cached answer)', async () => {
    const lookup = fakeDns('10.0.0.5');
    const send = makeSender({ allowPrivateTargets: false, lookup });

    await send(request('https://rebinding.example.test/one'));
    await send(request('https://rebinding.example.test/two'));

    expect(lookup.calls).toBe(2);
  });

  it('answers an unparseable URL as a failed attempt, never by throwing', async () => {
    for (const allowPrivateTargets of [false, true]) {
      const send = makeSender({ allowPrivateTargets, lookup: fakeDns('93.184.216.34') });

      const result = await send(request('https://exa mple.test/hook'));

      expect(result, String(allowPrivateTargets)).toMatchObject({ statusCode: undefined, error: 'invalid url' });
    }
    // A scheme Node cannot POST to, where the deployment allows more than https.
    const sandboxSend = makeSender({ allowPrivateTargets: true });
    expect(await sandboxSend(request('ftp://127.0.0.1/hook'))).toMatchObject({ statusCode: undefined, error: 'invalid url' });
  });

  it('reaches a local receiver when private targets are allowed (the sandbox)', async () => {
    const send = makeSender({ allowPrivateTargets: true });

    const result = await send(request(`${receiver.url}/allowed`));

    expect(result).toMatchObject({ statusCode: 200, error: undefined });
    expect(receiver.received.map((d) => d.path)).toEqual(['/allowed']);
  });
});
