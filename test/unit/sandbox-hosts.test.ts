import { describe, expect, it } from 'vitest';
import { addressedHere } from '../../sandbox/hosts.ts';

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
