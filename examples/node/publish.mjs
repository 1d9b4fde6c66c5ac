#!/usr/bin/env node
// Command line: publish storefront events to fashionai-pipeline's Redis broker.
//
//   node publish.mjs --event-type productView --id p0001 --session sess456 [--user 90]
//   node publish.mjs --file events.jsonl        (JSON Lines of seed-format bodies; - for stdin)
//
// Settings come from FASHIONAI_BROKER_URL, FASHIONAI_QUEUE, FASHIONAI_TENANT (and
// FASHIONAI_TENANTS, FASHIONAI_PUBLISH_TIMEOUT), as for the Python side. Prints one JSON
// line per published event ({"id": ..., "queue": ...}). Exit status: 0 when every event
// was published, 1 when some line was refused (each reported on stderr by line number,
// the valid ones still published), 2 on a usage error, 3 when the broker is unavailable.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { BrokerUnavailable, InvalidEvent, Publisher, queueFor, settingsFromEnv, validateEvent } from './publisher.mjs';

function usage(message) {
  process.stderr.write(`${message}\n`);
  process.stderr.write(
    'usage: publish.mjs --event-type T --id I --session S [--user U] | --file F (- for stdin)\n',
  );
  process.exit(2);
}

function eventsFromArgs(values) {
  if (values.file !== undefined) {
    const text = readFileSync(values.file === '-' ? 0 : values.file, 'utf8');
    const events = [];
    const refused = [];
    text.split('\n').forEach((line, index) => {
      if (line.trim() === '') return;
      try {
        events.push({ line: index + 1, event: JSON.parse(line) });
      } catch (err) {
        refused.push({ line: index + 1, message: `not valid JSON: ${err.message}` });
      }
    });
    return { events, refused };
  }
  if (values['event-type'] === undefined || values.session === undefined) {
    usage('--event-type and --session are required without --file');
  }
  const event = { sessionId: values.session, eventType: values['event-type'], data: { id: values.id ?? '' } };
  if (values.user !== undefined) event.userId = values.user;
  return { events: [{ line: 0, event }], refused: [] };
}

async function main() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        'event-type': { type: 'string' },
        id: { type: 'string' },
        session: { type: 'string' },
        user: { type: 'string' },
        file: { type: 'string' },
      },
    }));
  } catch (err) {
    usage(err.message);
  }
  let settings;
  try {
    settings = settingsFromEnv();
  } catch (err) {
    usage(err.message);
  }
  const { events, refused } = eventsFromArgs(values);
  const publisher = new Publisher(settings);
  const queue = queueFor(settings);
  try {
    // Validate each line on its own, so one bad line does not hold back the others,
    // then publish the valid ones in one LPUSH.
    const valid = [];
    for (const { line, event } of events) {
      try {
        validateEvent(event);
        valid.push(event);
      } catch (err) {
        if (!(err instanceof InvalidEvent)) throw err;
        refused.push({ line, message: err.message });
      }
    }
    const ids = await publisher.publishMany(valid);
    for (const id of ids) process.stdout.write(`${JSON.stringify({ id, queue })}\n`);
  } catch (err) {
    if (err instanceof BrokerUnavailable) {
      process.stderr.write(`${err.message}\n`);
      process.exitCode = 3;
      return;
    }
    throw err;
  } finally {
    await publisher.close();
  }
  refused.sort((a, b) => a.line - b.line);
  for (const { line, message } of refused) {
    process.stderr.write(line ? `refused: line ${line}: ${message}\n` : `refused: ${message}\n`);
  }
  if (refused.length) process.exitCode = 1;
}

await main();
