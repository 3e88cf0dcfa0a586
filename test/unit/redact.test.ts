import { describe, expect, it } from 'vitest';
import { redactedUrl } from '../../functions/core/redact.ts';

describe('redactedUrl', () => {
  it("keeps the endpoint and its query's names, not their values", () => {
    expect(redactedUrl('https://hooks.example.com:8443/in/x?token=tok_1&v=2&token=tok_2')).toBe(
      'https://hooks.example.com:8443/in/x?token=redacted&v=redacted&token=redacted',
    );
  });

  it('leaves a URL with no query as it is', () => {
    expect(redactedUrl('https://hooks.example.com/in')).toBe('https://hooks.example.com/in');
  });

  it('hides a user and password (a webhook stored before they were refused)', () => {
    const redacted = redactedUrl('https://me:pa55@hooks.example.com/in');
    expect(redacted).toBe('https://redacted@hooks.example.com/in');
    expect(redacted).not.toContain('pa55');
  });

  it('names nothing of a URL it cannot read', () => {
    expect(redactedUrl('not a url ?token=tok_1')).toBe('redacted');
  });
});
