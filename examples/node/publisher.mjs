// Publishing storefront events to fashionai-pipeline's Redis broker from Node.js.
//
// The wire format is described in docs/QUEUE.md: a JSON envelope
//   {"v":1,"id":...,"tenant":...,"ts":...,"attempt":0,"event":{seed body}}
// framed as a kombu Redis message and pushed with one LPUSH onto the queue's list.
// A worker of the project delivers it exactly as if the Python Publisher had sent it.
//
// Contract of Publisher.publish / publishMany:
// - the event is validated first (the worker's own rules); an invalid one throws
//   InvalidEvent naming the field, and nothing is sent;
// - it resolves once Redis has answered the LPUSH, i.e. the broker has the event;
// - each attempt is bounded by FASHIONAI_PUBLISH_TIMEOUT; a failed connection is
//   replaced once within the same call (about 2 x the timeout in all), then it
//   throws BrokerUnavailable. A timed-out LPUSH may still have reached Redis, so a
//   caller that publishes again may send a duplicate (delivery is at least once).

import { randomBytes } from 'node:crypto';
import { createClient, ErrorReply } from 'redis';

export const ENVELOPE_VERSION = 1;
export const EVENT_TYPES = Object.freeze(['productView', 'categoryView', 'shopTheLook', 'customShelf']);
export const MAX_LEN = 512; // characters (code points), for every id, as the worker checks
const TENANT_PATTERN = /^[A-Za-z0-9_.-]+$/;
const EVENT_KEYS = new Set(['userId', 'sessionId', 'eventType', 'data']);

export class InvalidEvent extends Error {
  constructor(field, rule) {
    super(`${field}: ${rule}`);
    this.name = 'InvalidEvent';
    this.field = field;
    this.rule = rule;
  }
}

export class BrokerUnavailable extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = 'BrokerUnavailable';
  }
}

/** The password of a URL replaced by '***', for messages and logs. */
export function redactUrl(url) {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '<unparsable URL>';
  }
}

/**
 * The settings a publisher needs, from the same FASHIONAI_* variables the Python side reads
 * (README, "Configuration"). Throws Error naming the variable when one is invalid.
 */
export function settingsFromEnv(env = process.env) {
  const brokerUrl = env.FASHIONAI_BROKER_URL || 'redis://127.0.0.1:6379/0';
  const scheme = brokerUrl.split('://', 1)[0];
  if (scheme !== 'redis' && scheme !== 'rediss') {
    throw new Error(
      `FASHIONAI_BROKER_URL: this example publishes to a Redis broker only (got ${scheme}://); ` +
        'for RabbitMQ publish with an AMQP client as docs/QUEUE.md describes',
    );
  }
  const queue = env.FASHIONAI_QUEUE || 'fashionai.events';
  const tenant = env.FASHIONAI_TENANT || 'default';
  if (!TENANT_PATTERN.test(tenant)) throw new Error(`FASHIONAI_TENANT: must match ${TENANT_PATTERN}`);
  let tenants = [];
  if (env.FASHIONAI_TENANTS) {
    let parsed;
    try {
      parsed = JSON.parse(env.FASHIONAI_TENANTS);
    } catch {
      throw new Error('FASHIONAI_TENANTS: not valid JSON');
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new Error('FASHIONAI_TENANTS: must be a JSON object of tenant names');
    }
    // Only the names are used here: each tenant's token stays with the workers.
    tenants = Object.keys(parsed);
  }
  const timeout = env.FASHIONAI_PUBLISH_TIMEOUT === undefined ? 0.5 : Number(env.FASHIONAI_PUBLISH_TIMEOUT);
  if (!Number.isFinite(timeout) || timeout <= 0) {
    throw new Error('FASHIONAI_PUBLISH_TIMEOUT: must be a number of seconds above 0');
  }
  return { brokerUrl, queue, tenant, tenants, publishTimeoutMs: Math.ceil(timeout * 1000) };
}

/** The queue of `tenant`: FASHIONAI_QUEUE, or `<queue>.<tenant>` when FASHIONAI_TENANTS is set. */
export function queueFor(settings, tenant = settings.tenant) {
  if (settings.tenants.length === 0) {
    if (tenant !== settings.tenant) {
      throw new InvalidEvent('tenant', `unknown tenant ${JSON.stringify(tenant)} (configured: ${settings.tenant})`);
    }
    return settings.queue;
  }
  if (!settings.tenants.includes(tenant)) {
    throw new InvalidEvent('tenant', `unknown tenant ${JSON.stringify(tenant)} (configured: ${settings.tenants.join(', ')})`);
  }
  return `${settings.queue}.${tenant}`;
}

function codePoints(text) {
  let n = 0;
  for (const _ of text) n += 1;
  return n;
}

function checkId(value, field, { allowEmpty }) {
  if (typeof value !== 'string') throw new InvalidEvent(field, 'must be a string');
  const length = codePoints(value);
  if (length > MAX_LEN) throw new InvalidEvent(field, `must be at most ${MAX_LEN} characters`);
  if (!allowEmpty && length === 0) throw new InvalidEvent(field, 'must not be empty');
}

/**
 * Validate one event against the seed's contract, as the worker will (docs/QUEUE.md,
 * "What the worker checks"), and return its body in the seed's key order.
 * Throws InvalidEvent naming the first bad field. Pure.
 */
export function validateEvent(event) {
  if (event === null || typeof event !== 'object' || Array.isArray(event)) {
    throw new InvalidEvent('body', 'must be a JSON object');
  }
  for (const key of Object.keys(event)) {
    if (!EVENT_KEYS.has(key)) throw new InvalidEvent(key, 'unknown field');
  }
  if (event.userId === null) throw new InvalidEvent('userId', 'must be left out when absent, not null');
  if (event.userId !== undefined) checkId(event.userId, 'userId', { allowEmpty: false });
  if (event.sessionId === undefined) throw new InvalidEvent('sessionId', 'required');
  checkId(event.sessionId, 'sessionId', { allowEmpty: false });
  if (event.eventType === undefined) throw new InvalidEvent('eventType', 'required');
  if (!EVENT_TYPES.includes(event.eventType)) {
    throw new InvalidEvent('eventType', `must be one of ${EVENT_TYPES.join(', ')}`);
  }
  const data = event.data;
  if (data === undefined) throw new InvalidEvent('data', 'required');
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw new InvalidEvent('data', 'must be a JSON object');
  }
  for (const key of Object.keys(data)) {
    if (key !== 'id') throw new InvalidEvent(`data.${key}`, 'unknown field');
  }
  if (data.id === undefined) throw new InvalidEvent('data.id', 'required');
  checkId(data.id, 'data.id', { allowEmpty: true });
  if (event.eventType === 'customShelf' && data.id !== '') {
    throw new InvalidEvent('data.id', 'must be "" for customShelf');
  }
  if (event.eventType !== 'customShelf' && data.id === '') {
    throw new InvalidEvent('data.id', `must be a non-empty id for ${event.eventType}`);
  }
  const body = { sessionId: event.sessionId, eventType: event.eventType, data: { id: data.id } };
  return event.userId === undefined ? body : { userId: event.userId, ...body };
}

/** A new message id: 128 random bits as 32 hex digits (also the kombu delivery tag). */
export function newId() {
  return randomBytes(16).toString('hex');
}

/** The envelope as JSON text. `body` must be validated (validateEvent). */
export function encodeEnvelope({ id, tenant, ts, body, attempt = 0 }) {
  return JSON.stringify({ v: ENVELOPE_VERSION, id, tenant, ts, attempt, event: body });
}

/**
 * The envelope framed as kombu's Redis transport stores a message: the body as text
 * (not base64), the delivery tag unique per message. Key order as kombu writes it.
 */
export function kombuFrame(payload, queue, tag) {
  return JSON.stringify({
    body: payload,
    'content-encoding': 'utf-8',
    'content-type': 'application/json',
    headers: {},
    properties: {
      delivery_mode: 2,
      delivery_info: { exchange: '', routing_key: queue },
      priority: 0,
      delivery_tag: tag,
    },
  });
}

export class Publisher {
  /** One per process is enough; it opens its connection on the first publish. */
  constructor(settings = settingsFromEnv()) {
    this.settings = settings;
    this.published = 0;
    this._client = null;
  }

  /** Validate and publish one event; resolves to its message id. */
  async publish(event, { tenant } = {}) {
    const [id] = await this.publishMany([event], { tenant });
    return id;
  }

  /**
   * Validate every event (InvalidEvent names the position, e.g. "events[2].data.id"), then
   * publish them all in one LPUSH, which Redis applies whole or not at all. Resolves to the
   * message ids in order.
   */
  async publishMany(events, { tenant = this.settings.tenant } = {}) {
    const bodies = events.map((event, i) => {
      try {
        return validateEvent(event);
      } catch (err) {
        if (err instanceof InvalidEvent) throw new InvalidEvent(`events[${i}].${err.field}`, err.rule);
        throw err;
      }
    });
    if (bodies.length === 0) return [];
    const queue = queueFor(this.settings, tenant);
    const ts = Date.now() / 1000;
    const ids = bodies.map(() => newId());
    const frames = bodies.map((body, i) =>
      kombuFrame(encodeEnvelope({ id: ids[i], tenant, ts, body }), queue, ids[i]),
    );
    await this._lpush(queue, frames);
    this.published += frames.length;
    return ids;
  }

  async close() {
    const client = this._client;
    this._client = null;
    if (client !== null) await client.close().catch(() => client.destroy());
  }

  async _lpush(queue, frames) {
    const deadline = Date.now() + 2 * this.settings.publishTimeoutMs;
    let lastError;
    for (let attempt = 1; attempt <= 2; attempt += 1) {
      try {
        const client = await this._connected();
        await client.lPush(queue, frames);
        return;
      } catch (err) {
        if (err instanceof ErrorReply) {
          throw err; // Redis refused the command (e.g. WRONGTYPE): not a connection problem
        }
        lastError = err;
        this._discard();
        if (Date.now() >= deadline) break;
      }
    }
    throw new BrokerUnavailable(
      `broker ${redactUrl(this.settings.brokerUrl)} unavailable: ${lastError?.code ?? lastError?.name ?? 'Error'}`,
      { cause: lastError },
    );
  }

  async _connected() {
    if (this._client !== null) return this._client;
    const timeout = this.settings.publishTimeoutMs;
    const client = createClient({
      url: this.settings.brokerUrl,
      name: 'fashionai-publisher-node',
      // A dropped connection fails the call at once instead of queueing it behind a
      // reconnect loop: the caller is told within the bound, as the Python publisher does.
      disableOfflineQueue: true,
      socket: { connectTimeout: timeout, reconnectStrategy: false },
      commandOptions: { timeout },
    });
    // node-redis emits connection errors as events; without a listener they would crash
    // the process. The failed command itself rejects, which is where they are handled.
    client.on('error', () => {});
    this._client = client;
    try {
      await client.connect();
    } catch (err) {
      this._discard();
      throw err;
    }
    return client;
  }

  _discard() {
    const client = this._client;
    this._client = null;
    if (client !== null) {
      try {
        client.destroy();
      } catch {
        // already closed: nothing to release
      }
    }
  }
}
