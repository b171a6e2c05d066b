// Helpers for the browser tests: system Chromium through playwright-core.

import { chromium } from 'playwright-core';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawn } from 'node:child_process';

export const BASE = (process.env.CHAT_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
export const ARTIFACTS = process.env.ARTIFACTS_DIR || '/work/main/test-artifacts';
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

export const DESKTOP = { width: 1280, height: 800 };
export const MOBILE = { width: 390, height: 844 };

mkdirSync(ARTIFACTS, { recursive: true });

export async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
}

/** Fails early, with a clear message, when the server is not there in --dev mode. */
export async function checkServer() {
  let res;
  try {
    res = await fetch(`${BASE}/dev/users`);
  } catch (e) {
    throw new Error(`cannot reach the gateway at CHAT_URL=${BASE} (${e.cause?.code || e.message}); start it with --dev`);
  }
  if (!res.ok) throw new Error(`GET ${BASE}/dev/users answered ${res.status}: is the gateway running with --dev?`);
  const body = await res.json();
  return body.users;
}

/** A unique marker for message bodies, so runs against a long-lived server never collide. */
export function tag() {
  return `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
}

/**
 * Opens a fresh browser context as a demo user (through the user picker) and
 * waits until the WebSocket session is up. `routeWs(ws)` can intercept /ws.
 */
export async function signIn(browser, userId, { viewport = DESKTOP, mobile = false, routeWs, bypassCSP = false } = {}) {
  const context = await browser.newContext({
    bypassCSP,
    viewport,
    deviceScaleFactor: mobile ? 2 : 1,
    isMobile: mobile,
    hasTouch: mobile,
    locale: 'en-GB',
    timezoneId: 'UTC',
  });
  if (routeWs) await context.routeWebSocket(/\/ws(\?|$)/, routeWs);
  const page = await context.newPage();
  const dialogs = [];
  const errors = [];
  page.on('dialog', (d) => {
    dialogs.push(d.message());
    d.dismiss().catch(() => {});
  });
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });
  if (process.env.DEBUG_WS) {
    // Frames of unrouted sockets, for debugging a failing test.
    page.on('websocket', (ws) => {
      const log = (dir) => (f) => console.error(`${Date.now() % 100000} ${userId} ${dir} ${String(f.payload).slice(0, 160)}`);
      ws.on('framesent', log('->'));
      ws.on('framereceived', log('<-'));
    });
  }
  await page.goto(`${BASE}/`);
  await page.locator(`[data-testid="user-option"][data-user-id="${userId}"]`).click();
  await waitConnected(page);
  return { context, page, dialogs, errors };
}

export async function waitConnected(page, timeout = 15000) {
  await page.locator('[data-testid="connection-status"][data-state="connected"]').waitFor({ timeout });
}

export function chatItem(page, peerId) {
  return page.locator(`[data-testid="chat-item"][data-peer-id="${peerId}"]`);
}

/** Clicks a conversation and waits until its history is shown. */
export async function openChat(page, peerId) {
  const item = chatItem(page, peerId);
  await item.click();
  await page.locator(`[data-testid="chat-item"][data-peer-id="${peerId}"][aria-current="true"]`).waitFor();
  await page.locator('[data-testid="message-list"][data-loaded="true"]').waitFor();
}

/** Types a message and presses Enter. */
export async function send(page, text) {
  const input = page.getByTestId('composer-input');
  await input.fill(text);
  await input.press('Enter');
}

/** Message bubbles whose body is exactly `text`. */
export function bubbles(page, text) {
  return page.getByTestId('message').filter({
    has: page.getByTestId('message-body').filter({ hasText: text }),
  });
}

/** All bubble bodies and seqs in the open conversation, in DOM order. */
export async function shownMessages(page) {
  return page.$$eval('[data-testid="message"]', (els) =>
    els.map((el) => ({
      seq: el.dataset.seq ? Number(el.dataset.seq) : null,
      own: el.dataset.own === 'true',
      status: el.dataset.status || null,
      body: el.querySelector('[data-testid="message-body"]').textContent,
    })),
  );
}

/** Polls `fn` until it returns a truthy value (returned) or times out. */
export async function eventually(fn, { timeout = 10000, interval = 100, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${message} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** Polls `fn` until it returns `expected` (compared with ===); the error shows the last value. */
export async function eventuallyEqual(fn, expected, { timeout = 10000, interval = 100, message = 'value' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last === expected) return;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      const shown = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${timeout} ms waiting for ${message} to be ${JSON.stringify(expected)} (last: ${shown})`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function screenshot(page, name) {
  const path = join(ARTIFACTS, name);
  await page.screenshot({ path, animations: 'disabled' });
  return path;
}

/**
 * A WebSocket route that can refuse new connections, drop `ack` frames on
 * their way to the page, and cut the current connection.
 */
export function wsGate() {
  const gate = {
    block: false,
    dropAcks: false,
    /** Drop this many live `message` frames (as if lost) before passing them again. */
    dropMessages: 0,
    dropped: 0,
    droppedMessages: 0,
    current: null,
    connections: 0,
    refused: 0,
    handler: (ws) => {
      if (gate.block) {
        gate.refused += 1;
        ws.close({ code: 4000, reason: 'blocked by test' }).catch(() => {});
        return;
      }
      gate.connections += 1;
      gate.current = ws;
      const server = ws.connectToServer();
      ws.onMessage((m) => server.send(m));
      server.onMessage((m) => {
        if (gate.dropAcks && typeof m === 'string' && m.includes('"type":"ack"')) {
          gate.dropped += 1;
          return;
        }
        if (gate.dropMessages > 0 && typeof m === 'string' && m.startsWith('{"type":"message"')) {
          gate.dropMessages -= 1;
          gate.droppedMessages += 1;
          return;
        }
        ws.send(m);
      });
      ws.onClose((code, reason) => server.close({ code, reason }).catch(() => {}));
      server.onClose((code, reason) => ws.close({ code, reason }).catch(() => {}));
    },
    /** Cuts the page's current connection (as a network failure would). */
    async cut() {
      const ws = gate.current;
      gate.current = null;
      if (ws) await ws.close({ code: 4000, reason: 'cut by test' }).catch(() => {});
    },
  };
  return gate;
}

/**
 * Runs a shell command (the server restart); resolves on exit 0. Its output goes
 * to a log file, not a pipe: a server it starts in the background must not
 * hold our pipe open (or die of SIGPIPE once the tests are gone).
 */
export function runShell(cmd, { timeout = 120000, log = join(ARTIFACTS, 'restart-cmd.log') } = {}) {
  return new Promise((resolve, reject) => {
    const fd = openSync(log, 'a');
    const child = spawn('/bin/sh', ['-c', cmd], { stdio: ['ignore', fd, fd] });
    closeSync(fd);
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`restart command timed out after ${timeout} ms: ${cmd} (output in ${log})`));
    }, timeout);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new Error(`restart command exited with ${code}: ${cmd} (output in ${log})`));
    });
  });
}

const AXE = join(dirname(fileURLToPath(import.meta.url)), 'node_modules', 'axe-core', 'axe.min.js');

/**
 * Runs axe-core (WCAG 2.x A and AA rules) on the page; returns the violations
 * as short strings. The context must have been made with bypassCSP (the page's
 * CSP rightly refuses injected scripts).
 */
export async function axeViolations(page) {
  await page.addScriptTag({ path: AXE });
  const result = await page.evaluate(async () =>
    // eslint-disable-next-line no-undef
    axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } }),
  );
  return result.violations.map(
    (v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`,
  );
}
