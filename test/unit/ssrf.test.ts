import { describe, expect, it } from 'vitest';
import { checkTargetUrl, classifyAddress, isForbiddenAddress } from '../../functions/core/ssrf.ts';

describe('address classification', () => {
  it.each([
    ['8.8.8.8', 'public'],
    ['1.1.1.1', 'public'],
    ['2606:4700:4700::1111', 'public'],
    ['10.1.2.3', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['172.32.0.1', 'public'],
    ['192.168.1.1', 'private'],
    ['100.64.0.1', 'private'],
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['0.0.0.0', 'unspecified'],
    ['169.254.1.1', 'link_local'],
    ['169.254.169.254', 'metadata'],
    ['169.254.170.2', 'metadata'],
    ['224.0.0.1', 'multicast'],
    ['240.0.0.1', 'reserved'],
    ['255.255.255.255', 'reserved'],
    ['192.0.2.10', 'reserved'],
    ['198.18.0.1', 'reserved'],
    ['::', 'unspecified'],
    ['::1', 'loopback'],
    ['fe80::1', 'link_local'],
    ['fe80::1%eth0', 'link_local'],
    ['fc00::1', 'unique_local'],
    ['fd12:3456::1', 'unique_local'],
    ['fd00:ec2::254', 'metadata'],
    ['ff02::1', 'multicast'],
    ['2001:db8::1', 'reserved'],
    ['[::1]', 'loopback'],
  ])('%s is %s', (ip, expected) => {
    expect(classifyAddress(ip)).toBe(expected);
  });

  it.each([
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:7f00:1', 'loopback'],
    ['::ffff:169.254.169.254', 'metadata'],
    ['::ffff:10.0.0.1', 'private'],
    ['::ffff:8.8.8.8', 'public'],
    ['::127.0.0.1', 'loopback'],
    ['64:ff9b::10.0.0.1', 'private'],
    ['64:ff9b::8.8.8.8', 'public'],
    ['2002:7f00:1::', 'loopback'],
    ['2002:a9fe:a9fe::1', 'metadata'],
    ['2002:0808:0808::1', 'public'],
  ])('judges %s by the IPv4 inside it: %s', (ip, expected) => {
    expect(classifyAddress(ip)).toBe(expected);
  });

  it('forbids whatever does not parse', () => {
    for (const junk of ['', 'localhost', '1.2.3', '256.1.1.1', '1:2:3:4:5:6:7:8:9', 'g::1', '01.02.03.004.5']) {
      expect(isForbiddenAddress(junk)).toBe(true);
    }
  });
});

describe('target URLs', () => {
  it('needs https and a name or public address, unless private targets are allowed', () => {
    expect(checkTargetUrl('https://hooks.example.com/x', false)).toBeUndefined();
    expect(checkTargetUrl('https://8.8.8.8/x', false)).toBeUndefined();
    expect(checkTargetUrl('http://hooks.example.com/x', false)).toMatch(/https/);
    expect(checkTargetUrl('https://127.0.0.1/x', false)).toMatch(/loopback/);
    expect(checkTargetUrl('https://[::ffff:169.254.169.254]/x', false)).toMatch(/metadata/);
    expect(checkTargetUrl('https://localhost:8443/x', false)).toMatch(/localhost/);
    expect(checkTargetUrl('https://api.localhost/x', false)).toMatch(/localhost/);
    expect(checkTargetUrl('http://127.0.0.1:9/x', true)).toBeUndefined();
  });
});
