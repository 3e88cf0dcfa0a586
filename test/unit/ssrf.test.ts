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
    ['192.0.0.8', 'reserved'],
    ['198.18.0.1', 'reserved'],
    ['198.19.255.255', 'reserved'],
    ['198.51.100.7', 'reserved'],
    ['203.0.113.9', 'reserved'],
    ['0.1.2.3', 'unspecified'],
    ['239.255.255.250', 'multicast'],
    ['100.127.255.255', 'private'],
    ['192.168.255.255', 'private'],
    ['169.254.255.255', 'link_local'],
    ['::', 'unspecified'],
    ['::1', 'loopback'],
    ['fe80::1', 'link_local'],
    ['fe80::1%eth0', 'link_local'],
    ['fc00::1', 'unique_local'],
    ['fd12:3456::1', 'unique_local'],
    ['fd00:ec2::254', 'metadata'],
    ['ff02::1', 'multicast'],
    ['2001:db8::1', 'reserved'],
    ['febf:ffff::1', 'link_local'],
    ['fdff:ffff::1', 'unique_local'],
    ['fec0::1', 'reserved'],
    ['ff0e::1', 'multicast'],
    ['2001:db8:ffff::1', 'reserved'],
    ['fe7f::1', 'reserved'],
    ['[::1]', 'loopback'],
    ['0:0:0:0:0:0:0:1', 'loopback'],
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
    ['::ffff:a00:5', 'private'],
    ['::ffff:a9fe:a9fe', 'metadata'],
    ['::ffff:0808:0808', 'public'],
    ['0:0:0:0:0:ffff:127.0.0.1', 'loopback'],
    ['::ffff:0:127.0.0.1', 'loopback'],
    ['::10.0.0.1', 'private'],
    ['::a9fe:a9fe', 'metadata'],
    ['64:ff9b::127.0.0.1', 'loopback'],
    ['64:ff9b::a9fe:a9fe', 'metadata'],
    ['64:ff9b::c0a8:1', 'private'],
    ['2002:0a00:0005::', 'private'],
    ['2002:c0a8:0101:1::1', 'private'],
  ])('judges %s by the IPv4 inside it: %s', (ip, expected) => {
    expect(classifyAddress(ip)).toBe(expected);
  });

  it('forbids whatever does not parse, without throwing', () => {
    const junk = [
      '',
      'localhost',
      '1.2.3',
      '256.1.1.1',
      '1:2:3:4:5:6:7:8:9',
      'g::1',
      '01.02.03.004.5',
      '127.0.0.1%eth0',
      '[8.8.8.8',
      ':::1',
      '8.8.8.8 ',
    ];
    for (const ip of junk) {
      expect(classifyAddress(ip), ip).not.toBe('public');
      expect(isForbiddenAddress(ip), ip).toBe(true);
    }
  });

  it('forbids everything but public addresses', () => {
    expect(isForbiddenAddress('8.8.8.8')).toBe(false);
    expect(isForbiddenAddress('2606:4700:4700::1111')).toBe(false);
    for (const ip of ['10.0.0.5', '::ffff:127.0.0.1', '169.254.169.254', 'fd00:ec2::254', '224.0.0.1', '::', '2001:db8::1']) {
      expect(isForbiddenAddress(ip), ip).toBe(true);
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
    expect(checkTargetUrl('https://LOCALHOST./x', false)).toMatch(/localhost/);
    expect(checkTargetUrl('https://2130706433/x', false)).toMatch(/loopback/);
    expect(checkTargetUrl('https://0x7f.1/x', false)).toMatch(/loopback/);
    expect(checkTargetUrl('https://10.0.0.5/x', false)).toMatch(/private/);
    expect(checkTargetUrl('https://[fd00:ec2::254]/x', false)).toMatch(/metadata/);
    expect(checkTargetUrl('not a url', false)).toBeDefined();
    expect(checkTargetUrl('http://127.0.0.1:9/x', true)).toBeUndefined();
  });
});
