/**
 * What sluice writes about a webhook's URL where others than its owner read: the
 * endpoint's scheme, host and port, and the names of its query's parameters, never
 * their values, which often carry the endpoint's token (`?token=…`), nor its path,
 * which often does too (Slack's `/services/T…/B…/<token>`, Discord's
 * `/api/webhooks/<id>/<token>`), nor a user and password. The owner sees the URL as
 * given through the API.
 */
export const REDACTED = 'redacted';

export function redactedUrl(raw: string): string {
  if (!URL.canParse(raw)) return REDACTED;
  const url = new URL(raw);
  const user = url.username || url.password ? `${REDACTED}@` : '';
  const path = url.pathname === '/' ? '/' : `/${REDACTED}`;
  // A part with no name (`?tok_…`, which URLSearchParams reads as a name) is a value.
  const parts = url.search
    .slice(1)
    .split('&')
    .filter((part) => part.length > 0)
    .map((part) => (part.indexOf('=') > 0 ? `${part.slice(0, part.indexOf('='))}=${REDACTED}` : REDACTED));
  return `${url.protocol}//${user}${url.host}${path}${parts.length > 0 ? `?${parts.join('&')}` : ''}`;
}
