/**
 * A receiver built into the sandbox, so the quick-start walk-through needs nothing
 * else running: `POST /sandbox/inbox/<name>` records a delivery (headers and body),
 * `GET /sandbox/inbox/<name>` lists what arrived. Sandbox only; not in the stack.
 */
import { Hono } from 'hono';

export interface InboxEntry {
  readonly received_at: string;
  readonly headers: Record<string, string>;
  readonly body: unknown;
}

const MAX_ENTRIES = 1_000;

export function inboxRoutes(): Hono {
  const inboxes = new Map<string, InboxEntry[]>();
  const app = new Hono();
  app.post('/sandbox/inbox/:name', async (c) => {
    const entries = inboxes.get(c.req.param('name')) ?? [];
    const text = await c.req.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // Keep the raw text.
    }
    const headers: Record<string, string> = {};
    for (const name of ['webhook-id', 'webhook-timestamp', 'webhook-signature', 'user-agent', 'content-type']) {
      const value = c.req.header(name);
      if (value !== undefined) headers[name] = value;
    }
    entries.push({ received_at: new Date().toISOString(), headers, body });
    if (entries.length > MAX_ENTRIES) entries.shift();
    inboxes.set(c.req.param('name'), entries);
    return c.body(null, 204);
  });
  app.get('/sandbox/inbox/:name', (c) => c.json({ data: inboxes.get(c.req.param('name')) ?? [] }));
  return app;
}
