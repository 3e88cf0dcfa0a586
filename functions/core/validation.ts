/**
 * Validation of everything a client sends. Each function returns the typed input
 * or throws one ValidationError that lists every problem, so a client can fix a
 * request in one round trip. Nothing is stored before validation passes.
 */
import { isIP } from 'node:net';
import { ValidationError } from './errors.ts';
import type { EventInput, TenantLimits, WebhookStatus } from './model.ts';
import { checkTargetUrl } from './ssrf.ts';

export const RESOURCE_PATTERN = /^[A-Za-z0-9._:-]{1,200}$/;
export const TYPE_PATTERN = /^[a-z0-9_]+(\.[a-z0-9_]+)*$/;
export const TYPE_PATTERN_PATTERN = /^(\*|[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?)$/;
export const MAX_BODY_BYTES = 1024 * 1024;
export const MAX_EVENTS_PER_REQUEST = 100;
export const MAX_DATA_BYTES = 64 * 1024;
/** Deepest nesting of arrays and objects in an event's `data` (serializers recurse). */
export const MAX_DATA_DEPTH = 32;
const MAX_PARENTS = 20;
const MAX_IDEMPOTENCY_KEY = 200;
const IDEMPOTENCY_KEY_PATTERN = /^[\x21-\x7e]{1,200}$/;
const MAX_TYPES = 50;
const MAX_DESCRIPTION = 500;
const MAX_URL = 2_000;
const MAX_NAME = 200;

/**
 * What makes a parsed `data` value unfit to deliver, found in one walk without
 * recursion: arrays and objects nested deeper than `max` (serializers recurse), or a
 * number no JSON double can hold (`1e400` parses as Infinity, which would be sent on as
 * `null`: the subscriber would not get what the producer was told was accepted).
 */
function dataFault(value: unknown, max: number): 'too_deep' | 'not_finite' | 'inexact' | undefined {
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length > 0) {
    const [current, depth] = stack.pop() as [unknown, number];
    if (typeof current === 'number' && !Number.isFinite(current)) return 'not_finite';
    if (current instanceof InexactInteger) return 'inexact';
    if (current === null || typeof current !== 'object') continue;
    if (depth + 1 > max) return 'too_deep';
    for (const child of Object.values(current)) stack.push([child, depth + 1]);
  }
  return undefined;
}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function unknownFields(body: Json, allowed: readonly string[], where: string, problems: string[]): void {
  for (const key of Object.keys(body)) {
    if (!allowed.includes(key)) problems.push(`${where}${key} is not a known field`);
  }
}

function checkResource(value: unknown, field: string, problems: string[]): value is string {
  if (typeof value !== 'string' || !RESOURCE_PATTERN.test(value)) {
    problems.push(`${field} must match ${RESOURCE_PATTERN.source}`);
    return false;
  }
  return true;
}

/**
 * An integer in the body that a JSON double cannot keep exactly: past 2^53 most are
 * rounded (12345678901234567890 parses as 12345678901234567000), and the subscriber
 * would get a number the producer never sent. The parse leaves one of these in its
 * place, for validation to refuse with the field that holds it.
 */
export class InexactInteger {
  readonly source: string;
  constructor(source: string) {
    this.source = source;
  }
}

/**
 * Sixteen significant digits, a decimal point among them or not, may be an integer a
 * double rounds (2^53 has 16 digits); a body with none is parsed the quick way, since a
 * number of at most 15 significant digits is delivered as written (a double keeps 15).
 */
const LONG_DIGITS = /\d(?:\.?\d){15}/;

/**
 * The integer a JSON number's text stands for, however it is written (`12`, `12.0`,
 * `1.2e1`), or undefined when it stands for no integer (or for one too large to matter:
 * past 1e400 a double holds nothing finite).
 */
function integerOf(source: string): bigint | undefined {
  const match = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(source);
  if (!match) return undefined;
  const [, sign = '', whole = '', fraction = '', exponent = '0'] = match;
  const digits = whole + fraction;
  const scale = Number(exponent) - fraction.length;
  if (scale > 400) return undefined;
  if (scale >= 0) return BigInt(sign + digits + '0'.repeat(scale));
  const kept = digits.length + scale;
  // The digits past the point must all be 0 for an integer.
  if (/[^0]/.test(kept > 0 ? digits.slice(kept) : digits)) return undefined;
  return BigInt(sign + (kept > 0 ? digits.slice(0, kept) : '0'));
}

/**
 * JSON.parse's reviver, given each value's source text (ES2025): marks the integers a
 * double rounds, however written: those the double neither holds exactly (2^60 it does)
 * nor is delivered as (JSON.stringify writes the double's shortest form). `1e23` and
 * `8.08113891772845e+83`, as a producer's JSON.stringify writes such doubles, are no
 * double's exact value but are delivered as written, so they pass: judged by the exact
 * value alone, they were refused only when something else in the body had 16 digits in
 * a row (LONG_DIGITS, which turns this reviver on), and accepted otherwise.
 */
function markInexactIntegers(_key: string, value: unknown, context?: { source?: string }): unknown {
  if (typeof value !== 'number' || Number.isSafeInteger(value) || !Number.isFinite(value)) return value;
  const source = context?.source;
  const exact = source === undefined ? undefined : integerOf(source);
  if (exact === undefined || !Number.isInteger(value)) return value;
  return exact === BigInt(value) || exact === integerOf(String(value)) ? value : new InexactInteger(source as string);
}

/** Parses a JSON body, rejecting anything that is not an object. */
export function parseJsonObject(text: string): Json {
  let parsed: unknown;
  try {
    parsed = LONG_DIGITS.test(text)
      ? JSON.parse(text, markInexactIntegers as (this: unknown, key: string, value: unknown) => unknown)
      : JSON.parse(text);
  } catch (error) {
    // The reviver recurses: a body nested thousands deep overflows it, where JSON.parse alone would not.
    if (error instanceof RangeError)
      throw new ValidationError([`the body must nest arrays and objects at most ${MAX_DATA_DEPTH} levels deep`]);
    throw new ValidationError(['the body is not valid JSON']);
  }
  if (!isObject(parsed)) throw new ValidationError(['the body must be a JSON object']);
  return parsed;
}

export function validatePublish(body: Json): EventInput[] {
  const problems: string[] = [];
  unknownFields(body, ['events'], '', problems);
  const events = body.events;
  if (!Array.isArray(events) || events.length < 1 || events.length > MAX_EVENTS_PER_REQUEST) {
    problems.push(`events must be a list of 1 to ${MAX_EVENTS_PER_REQUEST} events`);
    throw new ValidationError(problems);
  }
  const inputs: EventInput[] = [];
  const keysSeen = new Set<string>();
  events.forEach((event: unknown, index) => {
    const at = `events[${index}].`;
    const problemsBefore = problems.length;
    if (!isObject(event)) {
      problems.push(`events[${index}] must be an object`);
      return;
    }
    unknownFields(event, ['resource', 'parents', 'type', 'data', 'id'], at, problems);
    checkResource(event.resource, `${at}resource`, problems);
    // Left out means none; null is no list (as an id of null is no id), so it is refused.
    const parents = event.parents === undefined ? [] : event.parents;
    if (!Array.isArray(parents) || parents.length > MAX_PARENTS) {
      problems.push(`${at}parents must be a list of at most ${MAX_PARENTS} resources`);
    } else {
      parents.forEach((parent: unknown, i) => {
        checkResource(parent, `${at}parents[${i}]`, problems);
      });
    }
    if (typeof event.type !== 'string' || !TYPE_PATTERN.test(event.type)) {
      problems.push(`${at}type must match ${TYPE_PATTERN.source}`);
    } else if (event.type.length > 200) {
      problems.push(`${at}type must be at most 200 characters`);
    } else if (event.type.startsWith('sluice.') || event.type.startsWith('webhook.')) {
      problems.push(`${at}type must not start with sluice. or webhook. (reserved)`);
    }
    const fault = 'data' in event ? dataFault(event.data, MAX_DATA_DEPTH) : undefined;
    if (!('data' in event)) {
      problems.push(`${at}data is required (any JSON value)`);
    } else if (fault === 'too_deep') {
      problems.push(`${at}data must nest arrays and objects at most ${MAX_DATA_DEPTH} levels deep`);
    } else if (fault === 'not_finite') {
      problems.push(`${at}data must hold only numbers a JSON double can represent (at most about 1.8e308)`);
    } else if (fault === 'inexact') {
      problems.push(
        `${at}data must hold only integers a JSON double keeps exactly (all up to 2^53 = 9007199254740992); send larger ones as strings`,
      );
    } else if (Buffer.byteLength(JSON.stringify(event.data)) > MAX_DATA_BYTES) {
      problems.push(`${at}data must be at most ${MAX_DATA_BYTES} bytes serialized`);
    }
    const key = event.id;
    if (key !== undefined && (typeof key !== 'string' || key.length > MAX_IDEMPOTENCY_KEY || !IDEMPOTENCY_KEY_PATTERN.test(key))) {
      problems.push(`${at}id must be 1 to ${MAX_IDEMPOTENCY_KEY} visible ASCII characters (no spaces)`);
    } else if (typeof key === 'string') {
      if (keysSeen.has(key)) problems.push(`${at}id repeats an id earlier in this request`);
      keysSeen.add(key);
    }
    // An event with a problem is not built (its fields may not even be iterable): the request is refused.
    if (problems.length > problemsBefore) return;
    inputs.push({
      resource: event.resource as string,
      // Each parent once, and not the resource itself (its own subscribers get the event already).
      parents: [...new Set(parents as string[])].filter((parent) => parent !== event.resource),
      type: event.type as string,
      data: event.data,
      idempotencyKey: key as string | undefined,
    });
  });
  if (problems.length > 0) throw new ValidationError(problems);
  return inputs;
}

export interface WebhookInput {
  readonly resource: string;
  readonly url: string;
  readonly types: readonly string[];
  readonly description: string;
  /** POSTs a second the endpoint asks for; absent: the deployment's. */
  readonly ratePerSecond?: number;
}

export interface WebhookPatch {
  readonly status?: WebhookStatus;
  readonly url?: string;
  readonly types?: readonly string[];
  readonly description?: string;
  /** null: back to the deployment's rate. */
  readonly ratePerSecond?: number | null;
}

/** What a webhook may be given in this deployment. */
export interface WebhookRules {
  /** `allowPrivateTargets`: plain http and private addresses too. */
  readonly allowHttp: boolean;
  /** `endpointRatePerSecond`: the most a webhook's `rate_per_second` may be. */
  readonly maxRatePerSecond: number;
}

/**
 * Half of a UTF-16 surrogate pair alone: JSON can carry it (`"\ud800"`), UTF-8 cannot, and
 * DynamoDB stores strings as UTF-8, so free text holding one would be refused there (a
 * 500) or stored changed. Events' `data` is stored as JSON text, escapes and all.
 */
const LONE_SURROGATE = /\p{Cs}/u;

/**
 * A URL's host as the URL parser leaves it (lower case, IDNA names in punycode): an IP
 * literal, or a DNS name, with one trailing dot at most. The parser takes empty labels
 * (`example..com`, `localhost..`), which no resolver does: a webhook made with one would
 * fail its ping as unverifiable (422) rather than as the bad input it is.
 */
function isHostName(host: string): boolean {
  if (host.startsWith('[') || isIP(host) !== 0) return true;
  const name = host.endsWith('.') ? host.slice(0, -1) : host;
  return (
    name.length >= 1 && name.length <= 253 && name.split('.').every((label) => /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/.test(label))
  );
}

function checkUrl(value: unknown, allowHttp: boolean, problems: string[]): void {
  if (typeof value !== 'string' || value.length > MAX_URL) {
    problems.push(`url must be a string of at most ${MAX_URL} characters`);
    return;
  }
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    problems.push('url must be an absolute URL');
    return;
  }
  // The URL parser drops these (leading and trailing spaces, tabs and newlines anywhere):
  // the webhook would then show one URL and be sent to another.
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this looks for
  if (/[\u0000-\u0020\u007f]/.test(value)) {
    problems.push('url must not contain spaces or control characters (encode a space as %20)');
    return;
  }
  if (LONE_SURROGATE.test(value)) {
    problems.push('url must be valid Unicode (it holds half of a surrogate pair)');
    return;
  }
  const schemes = allowHttp ? ['https:', 'http:'] : ['https:'];
  if (!schemes.includes(url.protocol)) {
    problems.push(`url must use ${allowHttp ? 'http or https' : 'https'}`);
  } else if (!isHostName(url.hostname)) {
    problems.push('url must name its host by an IP address or a DNS name (labels of 1 to 63 letters, digits, - or _, between single dots)');
    return;
  }
  if (url.username || url.password) problems.push('url must not contain credentials');
  const target = checkTargetUrl(value, allowHttp);
  if (target && !problems.some((p) => p.startsWith('url must use'))) problems.push(target);
  if (url.hash) problems.push('url must not contain a fragment');
}

function checkTypes(value: unknown, problems: string[]): void {
  if (!Array.isArray(value) || value.length < 1 || value.length > MAX_TYPES) {
    problems.push(`types must be a list of 1 to ${MAX_TYPES} type patterns`);
    return;
  }
  value.forEach((pattern: unknown, i) => {
    if (typeof pattern !== 'string' || !TYPE_PATTERN_PATTERN.test(pattern)) {
      problems.push(`types[${i}] must be an event type, a prefix ending in .*, or *`);
    } else if (pattern.length > 200) {
      problems.push(`types[${i}] must be at most 200 characters`);
    }
  });
}

/** A webhook's `rate_per_second`: null (or left out) is the deployment's rate. */
function checkRate(value: unknown, max: number, problems: string[]): void {
  if (value === undefined || value === null) return;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > max) {
    problems.push(
      `rate_per_second must be a whole number of POSTs a second from 1 to ${max} (this deployment's endpointRatePerSecond), or null for that rate`,
    );
  }
}

function checkDescription(value: unknown, problems: string[]): void {
  if (value !== undefined && (typeof value !== 'string' || value.length > MAX_DESCRIPTION)) {
    problems.push(`description must be a string of at most ${MAX_DESCRIPTION} characters`);
  } else if (typeof value === 'string' && LONE_SURROGATE.test(value)) {
    problems.push('description must be valid Unicode (it holds half of a surrogate pair)');
  }
}

export function validateWebhookCreate(body: Json, rules: WebhookRules): WebhookInput {
  const problems: string[] = [];
  unknownFields(body, ['resource', 'url', 'types', 'description', 'rate_per_second'], '', problems);
  checkResource(body.resource, 'resource', problems);
  checkUrl(body.url, rules.allowHttp, problems);
  // Left out means every type; null is no list of types (as PATCH refuses it).
  const types = body.types === undefined ? ['*'] : body.types;
  checkTypes(types, problems);
  checkDescription(body.description, problems);
  checkRate(body.rate_per_second, rules.maxRatePerSecond, problems);
  if (problems.length > 0) throw new ValidationError(problems);
  return {
    resource: body.resource as string,
    url: body.url as string,
    types: [...new Set(types as string[])],
    description: (body.description as string | undefined) ?? '',
    ...(typeof body.rate_per_second === 'number' && { ratePerSecond: body.rate_per_second }),
  };
}

export function validateWebhookPatch(body: Json, rules: WebhookRules): WebhookPatch {
  const problems: string[] = [];
  unknownFields(body, ['status', 'url', 'types', 'description', 'rate_per_second'], '', problems);
  if (Object.keys(body).length === 0) problems.push('give at least one of status, url, types, description, rate_per_second');
  if (body.status !== undefined && body.status !== 'active' && body.status !== 'disabled') {
    problems.push('status must be active or disabled');
  }
  if (body.url !== undefined) checkUrl(body.url, rules.allowHttp, problems);
  if (body.types !== undefined) checkTypes(body.types, problems);
  checkDescription(body.description, problems);
  checkRate(body.rate_per_second, rules.maxRatePerSecond, problems);
  if (problems.length > 0) throw new ValidationError(problems);
  return {
    ...(body.status !== undefined && { status: body.status as WebhookStatus }),
    ...(body.url !== undefined && { url: body.url as string }),
    ...(body.types !== undefined && { types: [...new Set(body.types as string[])] }),
    ...(body.description !== undefined && { description: body.description as string }),
    ...(body.rate_per_second !== undefined && { ratePerSecond: body.rate_per_second as number | null }),
  };
}

export interface TenantInput {
  readonly name: string;
  readonly limits: TenantLimits;
}

/** C0 and C1 control characters and DEL: a name is shown in lists and logs, one line. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: these are what it finds
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f]/;

/** A tenant's limits, and the largest value each may take. */
const LIMIT_BOUNDS: Record<keyof TenantLimits, number> = { max_webhooks: 10_000, rate_per_second: 10_000, burst: 5_000 };

function checkTenantName(name: unknown, problems: string[]): void {
  if (typeof name !== 'string' || name.trim().length < 1 || name.length > MAX_NAME) {
    problems.push(`name must be a string of 1 to ${MAX_NAME} characters`);
  } else if (CONTROL_CHARACTERS.test(name)) {
    problems.push('name must not contain control characters');
  } else if (LONE_SURROGATE.test(name)) {
    problems.push('name must be valid Unicode (it holds half of a surrogate pair)');
  }
}

/** Checks the limits given (all of them, or those present when `partial`); undefined when `limits` is not an object. */
function checkTenantLimits(limits: unknown, partial: boolean, problems: string[]): Json | undefined {
  if (!isObject(limits)) {
    problems.push('limits must be an object');
    return undefined;
  }
  unknownFields(limits, Object.keys(LIMIT_BOUNDS), 'limits.', problems);
  for (const [field, max] of Object.entries(LIMIT_BOUNDS)) {
    const v = limits[field];
    if (partial && v === undefined) continue;
    if (!Number.isInteger(v) || (v as number) < 1 || (v as number) > max) {
      problems.push(`limits.${field} must be an integer from 1 to ${max}`);
    }
  }
  return limits;
}

export function validateTenantCreate(body: Json, defaults: TenantLimits): TenantInput {
  const problems: string[] = [];
  unknownFields(body, ['name', 'limits'], '', problems);
  checkTenantName(body.name, problems);
  // Left out means the defaults; null is no object of limits (as PATCH refuses it).
  const given = body.limits === undefined ? {} : body.limits;
  if (!isObject(given)) {
    problems.push('limits must be an object');
    throw new ValidationError(problems);
  }
  // What is not given is the deployment's default, which must fit the bounds too.
  const limits = checkTenantLimits({ ...defaults, ...given }, false, problems);
  if (problems.length > 0) throw new ValidationError(problems);
  return { name: (body.name as string).trim(), limits: limits as unknown as TenantLimits };
}

/** A change to a tenant: its name, or any of its limits (the others are kept). */
export interface TenantChange {
  readonly name?: string;
  readonly limits?: Partial<TenantLimits>;
}

export function validateTenantUpdate(body: Json): TenantChange {
  const problems: string[] = [];
  unknownFields(body, ['name', 'limits'], '', problems);
  if (body.name === undefined && body.limits === undefined) problems.push('give name, limits or both');
  if (body.name !== undefined) checkTenantName(body.name, problems);
  const limits = body.limits === undefined ? undefined : checkTenantLimits(body.limits, true, problems);
  if (limits !== undefined && Object.keys(limits).length === 0)
    problems.push(`limits must give at least one of ${Object.keys(LIMIT_BOUNDS).join(', ')}`);
  if (problems.length > 0) throw new ValidationError(problems);
  return {
    ...(body.name !== undefined && { name: (body.name as string).trim() }),
    ...(limits !== undefined && { limits: limits as Partial<TenantLimits> }),
  };
}

/** A replay's window (`{"since":"<ISO-8601>","until":…}`): epoch ms; `until` undefined for now. Reads filter out what is past retention. */
export interface ReplayWindow {
  readonly since: number;
  readonly until: number | undefined;
}

/** An ISO-8601 date-time with minutes at least, and its offset: its date's parts captured. */
const ISO_INSTANT = /^(\d{4})-(\d\d)-(\d\d)T\d\d:\d\d(?::\d\d(?:\.\d{1,9})?)?(?:Z|[+-]\d\d:\d\d)$/i;

/** The body of a route that takes no fields (rotate-secret, dead-letters/replay, rotate-key): `{}` at most. */
export function validateNoFields(body: Json): void {
  const problems: string[] = [];
  unknownFields(body, [], '', problems);
  if (problems.length > 0) throw new ValidationError(problems);
}

export function validateReplay(body: Json): ReplayWindow {
  const problems: string[] = [];
  unknownFields(body, ['since', 'until'], '', problems);
  // Only ISO-8601 with its offset: without one, Date.parse reads the time in the server's
  // zone (UTC on Lambda, the laptop's in the sandbox), and beyond ISO it takes formats of
  // its own. Date.parse also rolls a day the month does not have into the next month
  // (2026-02-30 is 2 March): such a date is refused, not turned into a window days away.
  const instant = (value: unknown) => {
    const date = typeof value === 'string' ? ISO_INSTANT.exec(value) : null;
    if (!date) return Number.NaN;
    const [year, month, day] = date.slice(1).map(Number) as [number, number, number];
    // Day 0 of the next month is this month's last day (setUTCFullYear, unlike Date.UTC, keeps years 0–99).
    const last = new Date(0);
    last.setUTCFullYear(year, month, 0);
    return day <= last.getUTCDate() ? Date.parse(value as string) : Number.NaN;
  };
  const since = instant(body.since);
  if (Number.isNaN(since)) problems.push('since must be an ISO-8601 date-time with its offset (Z or ±hh:mm), e.g. 2026-11-22T10:00:00Z');
  const until = body.until === undefined ? undefined : instant(body.until);
  if (until !== undefined && Number.isNaN(until))
    problems.push('until must be an ISO-8601 date-time with its offset (Z or ±hh:mm), e.g. 2026-11-22T11:00:00Z');
  else if (until !== undefined && !Number.isNaN(since) && until <= since) problems.push('until must be later than since');
  if (problems.length > 0) throw new ValidationError(problems);
  return { since, until };
}

export interface SwitchInput {
  readonly scope: 'tenant' | 'resource' | 'webhook';
  readonly tenant: string;
  readonly target: string | undefined;
  readonly action: 'pause' | 'drop';
  readonly reason: string;
}

export function validateSwitch(body: Json): SwitchInput {
  const problems: string[] = [];
  unknownFields(body, ['scope', 'tenant', 'target', 'action', 'reason'], '', problems);
  const scope = body.scope;
  if (scope !== 'tenant' && scope !== 'resource' && scope !== 'webhook') problems.push('scope must be tenant, resource or webhook');
  if (typeof body.tenant !== 'string' || !/^ten_[0-9a-z]{19}$/.test(body.tenant)) problems.push('tenant must be a tenant id (ten_…)');
  if (body.action !== 'pause' && body.action !== 'drop') problems.push('action must be pause or drop');
  if (body.reason !== undefined && (typeof body.reason !== 'string' || body.reason.length > 500)) {
    problems.push('reason must be a string of at most 500 characters');
  } else if (typeof body.reason === 'string' && LONE_SURROGATE.test(body.reason)) {
    problems.push('reason must be valid Unicode (it holds half of a surrogate pair)');
  }
  if (scope === 'tenant' && body.target !== undefined) problems.push('target must be omitted for scope tenant');
  if (scope === 'resource') checkResource(body.target, 'target', problems);
  if (scope === 'webhook' && (typeof body.target !== 'string' || !/^wh_[0-9a-z]{19}$/.test(body.target))) {
    problems.push('target must be a webhook id (wh_…) for scope webhook');
  }
  if (problems.length > 0) throw new ValidationError(problems);
  return {
    scope: scope as SwitchInput['scope'],
    tenant: body.tenant as string,
    target: body.target as string | undefined,
    action: body.action as SwitchInput['action'],
    reason: (body.reason as string | undefined) ?? '',
  };
}
