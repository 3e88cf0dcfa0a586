/**
 * What sluice writes about a webhook's URL where others than its owner read: the
 * endpoint (scheme, host, port, path) and the names of its query's parameters, never
 * their values, which often carry the endpoint's token (`?token=…`), nor a user and
 * password. The owner sees the URL as given through the API.
 */
export const REDACTED = 'redacted';

export function redactedUrl(raw: string): string {
  if (!URL.canParse(raw)) return REDACTED;
  const url = new URL(raw);
  if (url.username || url.password) {
    url.username = REDACTED;
    url.password = '';
  }
  const names = [...url.searchParams.keys()];
  if (names.length > 0) url.search = names.map((name) => `${encodeURIComponent(name)}=${REDACTED}`).join('&');
  url.hash = '';
  return url.toString();
}
