import { describe, expect, it } from 'vitest';
import { redactedUrl } from '../../functions/core/redact.ts';

describe('redactedUrl', () => {
  it("keeps the endpoint's host and its query's names, not their values nor its path", () => {
    expect(redactedUrl('https://hooks.example.com:8443/in/x?token=tok_1&v=2&token=tok_2')).toBe(
      'https://hooks.example.com:8443/redacted?token=redacted&v=redacted&token=redacted',
    );
  });

  it('hides a path, where many endpoints carry their token (Slack, Discord)', () => {
    const slack = redactedUrl('https://hooks.slack.com/services/T0000/B0000/XXXXtok_s3cr3t');
    expect(slack).toBe('https://hooks.slack.com/redacted');
    expect(slack).not.toContain('tok_s3cr3t');
    expect(redactedUrl('https://discord.com/api/webhooks/123/tok_s3cr3t')).not.toContain('tok_s3cr3t');
  });

  it('hides a query part that has no name, which is a value', () => {
    const redacted = redactedUrl('https://hooks.example.com/?tok_s3cr3t&v=2');
    expect(redacted).toBe('https://hooks.example.com/?redacted&v=redacted');
    expect(redacted).not.toContain('tok_s3cr3t');
  });

  it('leaves a URL with no path or query as it is', () => {
    expect(redactedUrl('https://hooks.example.com')).toBe('https://hooks.example.com/');
  });

  it('hides a user and password (a webhook stored before they were refused)', () => {
    const redacted = redactedUrl('https://me:pa55@hooks.example.com/');
    expect(redacted).toBe('https://redacted@hooks.example.com/');
    expect(redacted).not.toContain('pa55');
  });

  it('names nothing of a URL it cannot read', () => {
    expect(redactedUrl('not a url ?token=tok_1')).toBe('redacted');
  });
});
