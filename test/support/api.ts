/** A small client for the sandbox's HTTP API, as a test would call it over the network. */
import { expect } from 'vitest';
import type { Sandbox } from '../../sandbox/sandbox.ts';

export interface ApiResponse {
  readonly status: number;
  readonly headers: Headers;
  // biome-ignore lint/suspicious/noExplicitAny: response bodies are asserted field by field.
  readonly body: any;
}

export async function call(
  sandbox: Pick<Sandbox, 'url'>,
  method: string,
  path: string,
  options: { key?: string; body?: unknown; rawBody?: string; contentType?: string } = {},
): Promise<ApiResponse> {
  const headers: Record<string, string> = {};
  if (options.key) headers.authorization = `Bearer ${options.key}`;
  const body = options.rawBody ?? (options.body === undefined ? undefined : JSON.stringify(options.body));
  if (body !== undefined) headers['content-type'] = options.contentType ?? 'application/json';
  const response = await fetch(`${sandbox.url}${path}`, { method, headers, body });
  const text = await response.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    // Leave non-JSON as text.
  }
  return { status: response.status, headers: response.headers, body: parsed };
}

/** Creates a tenant through the admin API and returns its id and key. */
export async function createTenant(sandbox: Sandbox, name = 'acme', limits?: Record<string, number>) {
  const response = await call(sandbox, 'POST', '/v1/admin/tenants', {
    key: sandbox.adminKey,
    body: { name, ...(limits && { limits }) },
  });
  if (response.status !== 201) throw new Error(`tenant creation failed: ${JSON.stringify(response.body)}`);
  return { id: response.body.id as string, key: response.body.api_key as string };
}

/** Creates a webhook and returns its id and secret. */
export async function createWebhook(
  sandbox: Sandbox,
  key: string,
  body: { resource: string; url: string; types?: string[] },
): Promise<{ id: string; secret: string }> {
  const response = await call(sandbox, 'POST', '/v1/webhooks', { key, body });
  if (response.status !== 201) throw new Error(`webhook creation failed: ${JSON.stringify(response.body)}`);
  return { id: response.body.id, secret: response.body.secret };
}

export async function publish(sandbox: Sandbox, key: string, events: unknown[]): Promise<ApiResponse> {
  return call(sandbox, 'POST', '/v1/events', { key, body: { events } });
}

/** An error answer as SPEC §3 shapes it: the status, the code, a sentence, no internals. */
export function expectError(response: ApiResponse, status: number, code: string): void {
  expect(response.status).toBe(status);
  expect(response.body).toEqual({ error: { code, message: expect.any(String) } });
  expect(response.body.error.message.length).toBeGreaterThan(10);
  expect(JSON.stringify(response.body)).not.toMatch(/at .*\.ts:\d+|Exception|stack/);
}
