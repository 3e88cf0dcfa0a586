import { describe, expect, it } from 'vitest';
import { addressedHere, sentFromHere } from '../../sandbox/hosts.ts';

describe('addressedHere (the Host the sandbox answers)', () => {
  it('takes addresses, localhost and the host it listens on, with or without a port or a trailing dot', () => {
    for (const host of ['127.0.0.1:8787', '127.0.0.1', '[::1]:8787', '10.0.0.5:8787', 'localhost:8787', 'LOCALHOST.', 'a.localhost:1']) {
      expect(addressedHere(host, '127.0.0.1'), host).toBe(true);
    }
    expect(addressedHere('devbox.lan:8787', 'devbox.lan')).toBe(true);
    expect(addressedHere('DevBox.LAN.:8787', 'devbox.lan')).toBe(true);
    // HTTP/1.0 sends none; a browser always does.
    expect(addressedHere(undefined, '127.0.0.1')).toBe(true);
  });

  it('refuses any other name, and a header that names no host', () => {
    for (const host of ['rebind.example.com:8787', '127.0.0.1.nip.io', 'localhost.example.com', 'notlocalhost', 'devbox.lan', 'a b', '']) {
      expect(addressedHere(host, '127.0.0.1'), host).toBe(false);
    }
  });
});

describe('sentFromHere (the Origin the sandbox answers)', () => {
  it('takes no Origin, and pages of a loopback address, localhost or the host it listens on', () => {
    for (const origin of [
      undefined,
      'http://127.0.0.1:8787',
      'http://127.8.0.1',
      'http://[::1]:3000',
      'http://localhost:5173',
      'https://app.localhost',
    ]) {
      expect(sentFromHere(origin, '127.0.0.1'), String(origin)).toBe(true);
    }
    expect(sentFromHere('http://devbox.lan:8787', 'devbox.lan')).toBe(true);
  });

  it("refuses any other site's page, one served from a public or private address, and a page with no origin (null)", () => {
    for (const origin of [
      'https://attacker.example',
      'http://203.0.113.5',
      'http://192.168.1.10:8787',
      'null',
      'http://localhost.example.com',
      '',
    ]) {
      expect(sentFromHere(origin, '127.0.0.1'), origin).toBe(false);
    }
  });
});
