// Browser tests of the --dev demo client: a patient and a doctor in two
// browser contexts against a running gateway (CHAT_URL). Run with
//   cd gateway/web/tests && npm ci
//   CHAT_URL=http://127.0.0.1:8080 CHAT_RESTART_CMD='…' node --test --test-concurrency=1
// (scripts/browser-tests.sh does all of it against a fresh standalone gateway).
// CHAT_RESTART_CMD must restart the gateway and return once it serves again;
// the restart test fails without it. Screenshots go to $ARTIFACTS_DIR (default
// /work/main/test-artifacts); CHROMIUM_PATH overrides /usr/bin/chromium;
// DEBUG_WS=1 prints the WebSocket frames of unrouted pages.
//
// Tests are written for a long-lived server too: bodies carry a unique tag, and
// every context is closed after its test (an open page of the same user would
// read the next test's messages as a second session).

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  BASE,
  DESKTOP,
  MOBILE,
  axeViolations,
  bubbles,
  chatItem,
  checkServer,
  eventually,
  eventuallyEqual,
  launch,
  openChat,
  runShell,
  screenshot,
  send,
  shownMessages,
  signIn,
  sleep,
  tag,
  waitConnected,
  wsGate,
} from './lib.js';

const PATIENT = 'pat-cara';
const PATIENT_NAME = 'Cara Jones';
const DOCTOR = 'doc-ana';
const OTHER_PATIENT = 'pat-dev'; // doc-ana's other chat

let browser;
const contexts = [];

async function as(userId, opts) {
  const s = await signIn(browser, userId, opts);
  contexts.push(s.context);
  return s;
}

function assertClean(...sessions) {
  for (const s of sessions) {
    assert.deepEqual(s.errors, [], 'no page errors');
    assert.deepEqual(s.dialogs, [], 'no dialogs');
  }
}

/** Status of the (single) own bubble with this body. */
async function statusOf(page, body) {
  const b = bubbles(page, body);
  if ((await b.count()) !== 1) return null;
  return b.getAttribute('data-status');
}

async function badge(page, peerId) {
  const el = chatItem(page, peerId).getByTestId('unread-badge');
  return (await el.isVisible()) ? (await el.textContent()).trim() : '';
}

async function totalBadge(page) {
  const el = page.getByTestId('total-unread');
  return (await el.isVisible()) ? (await el.textContent()).trim() : '';
}

/** Every seq in the open chat is unique and in ascending DOM order. */
async function assertOrderedOnce(page) {
  const seqs = (await shownMessages(page)).map((m) => m.seq).filter((s) => s !== null);
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), 'bubbles ordered by seq');
  assert.equal(new Set(seqs).size, seqs.length, 'no seq shown twice');
}

describe('demo web client', { concurrency: false }, () => {
  before(async () => {
    await checkServer();
    browser = await launch();
  });

  // Each test's users leave: an open page of the same user would read the
  // messages of the next test (and clear its badges) as a second session.
  afterEach(async () => {
    for (const c of contexts.splice(0)) await c.close().catch(() => {});
  });

  after(async () => {
    await browser?.close();
  });

  test('user picker lists the demo users', { timeout: 30000 }, async () => {
    const context = await browser.newContext({ viewport: DESKTOP });
    contexts.push(context);
    const page = await context.newPage();
    await page.goto(`${BASE}/`);
    const options = page.getByTestId('user-option');
    await options.first().waitFor();
    const ids = await options.evaluateAll((els) => els.map((e) => e.dataset.userId));
    assert.ok(ids.includes(PATIENT) && ids.includes(DOCTOR), `demo users listed: ${ids}`);
    const doctors = await page.locator('[data-testid="user-option"][data-role="doctor"]').count();
    const patients = await page.locator('[data-testid="user-option"][data-role="patient"]').count();
    assert.ok(doctors >= 2 && patients >= 2, 'at least two doctors and two patients');
    await screenshot(page, 'desktop-picker.png');

    // Date separators: "Today", "Yesterday", then dates (the client's own module).
    const labels = await page.evaluate(async () => {
      const f = await import('/format.js');
      const now = new Date(2025, 2, 12, 10, 0);
      return [
        f.formatDay(new Date(2025, 2, 12, 0, 5), now),
        f.formatDay(new Date(2025, 2, 11, 23, 55), now),
        f.formatDay(new Date(2025, 2, 3, 9, 0), now),
        f.formatDay(new Date(2024, 11, 24, 9, 0), now),
      ];
    });
    assert.equal(labels[0], 'Today');
    assert.equal(labels[1], 'Yesterday');
    assert.match(labels[2], /3/);
    assert.match(labels[2], /Mar/);
    assert.match(labels[3], /2024/);
  });

  test('a message is delivered live, Shift+Enter makes a new line, receipts go ✓ then ✓✓', { timeout: 60000 }, async () => {
    const doc = await as(DOCTOR);
    const pat = await as(PATIENT);
    // The doctor is looking at another chat first: the patient's message is "sent", not "read".
    await openChat(doc.page, OTHER_PATIENT);
    await openChat(pat.page, DOCTOR);
    await eventuallyEqual(() => chatItem(pat.page, DOCTOR).getByTestId('online-dot').getAttribute('data-online'), 'true', { message: 'doctor shown online to the patient' });

    const t = tag();
    const input = pat.page.getByTestId('composer-input');
    await input.click();
    await input.pressSequentially(`Good morning ${t}`);
    await input.press('Shift+Enter');
    await input.pressSequentially('second line');
    await input.press('Enter');
    const body = `Good morning ${t}\nsecond line`;
    assert.equal(await input.inputValue(), '', 'composer cleared after send');

    await eventuallyEqual(() => statusOf(pat.page, `Good morning ${t}`), 'sent', { message: '✓ sent' });
    assert.equal((await bubbles(pat.page, t).getByTestId('message-status').textContent()).trim().startsWith('✓'), true);

    // The doctor's list shows it (preview) while another chat is open.
    await eventually(async () => (await chatItem(doc.page, PATIENT).getByTestId('chat-preview').textContent()).includes(t), {
      message: 'preview in the doctor list',
    });
    await openChat(doc.page, PATIENT);
    const got = bubbles(doc.page, t);
    await got.waitFor();
    assert.equal(await got.getByTestId('message-body').textContent(), body, 'newline kept');
    assert.equal(await got.getAttribute('data-own'), 'false');

    // Opening the chat read it: the patient sees ✓✓.
    await eventuallyEqual(() => statusOf(pat.page, t), 'read', { message: '✓✓ read' });
    assert.equal((await bubbles(pat.page, t).getByTestId('message-status').textContent()).trim().slice(0, 2), '✓✓');

    // And back, live, both chats open.
    await send(doc.page, `Hello Cara ${t}`);
    await bubbles(pat.page, `Hello Cara ${t}`).waitFor({ timeout: 5000 });
    await eventuallyEqual(() => statusOf(doc.page, `Hello Cara ${t}`), 'read', { message: 'doctor sees ✓✓' });
    await assertOrderedOnce(pat.page);
    await assertOrderedOnce(doc.page);
    assert.ok((await pat.page.getByTestId('date-separator').last().textContent()).includes('Today'));
    await screenshot(doc.page, 'desktop-doctor-conversation.png');
    await screenshot(pat.page, 'desktop-patient-conversation.png');
    assertClean(pat, doc);
  });

  test('unread badge counts up on the other side and clears when the chat is opened', { timeout: 60000 }, async () => {
    const pat = await as(PATIENT);
    const doc = await as(DOCTOR);
    // Read everything in the patient's chat, then look at another one.
    await openChat(doc.page, PATIENT);
    await openChat(doc.page, OTHER_PATIENT);
    await eventuallyEqual(() => badge(doc.page, PATIENT), '', { message: 'badge starts cleared' });

    await openChat(pat.page, DOCTOR);
    const t = tag();
    await send(pat.page, `first ${t}`);
    await eventuallyEqual(() => badge(doc.page, PATIENT), '1', { message: 'badge 1' });
    await send(pat.page, `second ${t}`);
    await eventuallyEqual(() => badge(doc.page, PATIENT), '2', { message: 'badge 2' });
    await eventuallyEqual(() => totalBadge(doc.page), '2', { message: 'navbar total 2' });
    // A toast for the chat that is not open.
    const toast = doc.page.locator(`[data-testid="toast"][data-chat-id]`).filter({ hasText: PATIENT_NAME });
    await toast.waitFor({ timeout: 5000 });
    assert.ok((await toast.getByTestId('toast-body').textContent()).includes(`second ${t}`));
    // Counts settle at 2 once the persister has caught up (no double counting).
    await sleep(1500);
    assert.equal(await badge(doc.page, PATIENT), '2');
    await screenshot(doc.page, 'desktop-doctor-unread-toast.png');

    await openChat(doc.page, PATIENT);
    await eventuallyEqual(() => badge(doc.page, PATIENT), '', { message: 'badge cleared' });
    await eventuallyEqual(() => totalBadge(doc.page), '', { message: 'navbar total cleared' });
    await sleep(1500); // no late count brings it back
    assert.equal(await badge(doc.page, PATIENT), '');
    assert.equal(await totalBadge(doc.page), '');
    // The server kept the read mark: a reload shows no unread.
    await doc.page.reload();
    await waitConnected(doc.page);
    await chatItem(doc.page, PATIENT).waitFor();
    await sleep(500);
    assert.equal(await badge(doc.page, PATIENT), '', 'after a reload the server still has the read mark (GET /api/chats unread = 0)');
    assertClean(pat, doc);
  });

  test('typing indicator shows while the peer types and hides when they stop or send', { timeout: 60000 }, async () => {
    const pat = await as(PATIENT);
    const doc = await as(DOCTOR);
    await openChat(pat.page, DOCTOR);
    await openChat(doc.page, PATIENT);
    const indicator = doc.page.getByTestId('typing-indicator');
    assert.equal(await indicator.isVisible(), false);

    const input = pat.page.getByTestId('composer-input');
    await input.click();
    await input.pressSequentially('I have a question abo', { delay: 30 });
    await indicator.waitFor({ state: 'visible', timeout: 5000 });
    assert.equal((await indicator.textContent()).trim(), `${PATIENT_NAME} is typing…`);
    await eventuallyEqual(() => chatItem(doc.page, PATIENT).getByTestId('chat-preview').textContent(), 'typing…', { message: 'typing in the list' });
    await screenshot(doc.page, 'desktop-doctor-typing.png');

    // A pause: the client says it stopped, the indicator goes.
    await indicator.waitFor({ state: 'hidden', timeout: 9000 });

    // Typing again, then sending: hidden at once, the message is there.
    const t = tag();
    await input.pressSequentially(`ut ${t}`, { delay: 30 });
    await indicator.waitFor({ state: 'visible', timeout: 5000 });
    await input.press('Enter');
    await bubbles(doc.page, t).waitFor({ timeout: 5000 });
    await indicator.waitFor({ state: 'hidden', timeout: 2000 });
    assertClean(pat, doc);
  });

  test('a body with HTML is shown as text and runs nothing', { timeout: 60000 }, async () => {
    const pat = await as(PATIENT);
    const doc = await as(DOCTOR);
    await openChat(pat.page, DOCTOR);
    await openChat(doc.page, OTHER_PATIENT); // toast and preview get it too
    const t = tag();
    const payload = `<img src=x onerror=alert(1)> <script>alert(2)</script> <b>${t}</b>`;
    await send(pat.page, payload);

    const toast = doc.page.getByTestId('toast').filter({ hasText: t });
    await toast.waitFor({ timeout: 5000 });
    assert.equal(await toast.getByTestId('toast-body').textContent(), payload);
    assert.equal(await chatItem(doc.page, PATIENT).getByTestId('chat-preview').textContent(), payload);

    await openChat(doc.page, PATIENT);
    const bubble = bubbles(doc.page, t);
    await bubble.waitFor();
    assert.equal(await bubble.getByTestId('message-body').textContent(), payload, 'shown literally');
    assert.equal(await bubble.locator('img, script, b').count(), 0, 'no elements were made from the body');
    assert.equal(await pat.page.locator('[data-testid="message-list"] img, [data-testid="toast-region"] img').count(), 0);
    assert.equal(await doc.page.locator('[data-testid="message-list"] img, [data-testid="toast-region"] img, [data-testid="chat-list"] img').count(), 0);
    await sleep(1000); // an onerror would have fired by now
    assertClean(pat, doc);
  });

  test('a send the server refuses is marked failed and can be discarded', { timeout: 30000 }, async () => {
    const pat = await as(PATIENT);
    await openChat(pat.page, DOCTOR);
    const t = tag();
    const long = `${t} ${'x'.repeat(4100)}`; // over MAX_MESSAGE_CHARS (default 4000)
    await send(pat.page, long);
    const bubble = bubbles(pat.page, t);
    await eventuallyEqual(() => bubble.getAttribute('data-status'), 'failed', { message: 'failed status' });
    assert.match(await bubble.locator('.msg-failed').textContent(), /Not sent/);
    // The next message is not held up behind the failed one.
    await send(pat.page, `after the refused one ${t}`);
    await eventuallyEqual(() => statusOf(pat.page, `after the refused one ${t}`), 'sent', { message: 'next one sent' });
    await bubble.getByTestId('discard-send').click();
    await eventuallyEqual(() => bubble.count(), 1, { message: 'only the sent one left' });
    assert.equal(await bubbles(pat.page, `after the refused one ${t}`).count(), 1);
    // Failures on a refused send are expected console-free too.
    assertClean(pat);
  });

  test('presence: the online dot follows the peer coming and going', { timeout: 60000 }, async () => {
    // Users no other test signs in as, so their presence is settled (the
    // server announces "offline" only after PRESENCE_GRACE_MS, default 5 s).
    const patient = 'pat-eli';
    const doctor = 'doc-ben';
    const pat = await as(patient);
    const dot = chatItem(pat.page, doctor).getByTestId('online-dot');
    const before = await dot.getAttribute('data-online');
    const doc = await as(doctor);
    await eventuallyEqual(() => dot.getAttribute('data-online'), 'true', { message: `${doctor} online (was ${before})` });
    await openChat(pat.page, doctor);
    await eventuallyEqual(() => pat.page.getByTestId('peer-presence').textContent(), 'Online', { message: 'header says Online' });
    await doc.context.close();
    await eventuallyEqual(() => dot.getAttribute('data-online'), 'false', { timeout: 30000, message: `${doctor} offline after leaving` });
    assert.equal(await pat.page.getByTestId('peer-presence').textContent(), 'Offline');
    assertClean(pat);
  });

  test('a live message lost on the way is noticed by its seq gap and fetched (sync, then history)', { timeout: 60000 }, async () => {
    const gate = wsGate();
    const pat = await as(PATIENT);
    const doc = await as(DOCTOR, { routeWs: gate.handler });
    await openChat(pat.page, DOCTOR);
    await openChat(doc.page, PATIENT);
    const t = tag();
    gate.dropMessages = 1;
    await send(pat.page, `lost on the way ${t}`);
    await eventuallyEqual(() => gate.droppedMessages, 1, { message: 'one message frame dropped' });
    await sleep(300);
    assert.equal(await bubbles(doc.page, `lost on the way ${t}`).count(), 0);
    await send(pat.page, `arrives next ${t}`);
    await bubbles(doc.page, `arrives next ${t}`).waitFor({ timeout: 5000 });
    await bubbles(doc.page, `lost on the way ${t}`).waitFor({ timeout: 5000 });
    await assertOrderedOnce(doc.page);
    const lost = Number(await bubbles(doc.page, `lost on the way ${t}`).getAttribute('data-seq'));
    const next = Number(await bubbles(doc.page, `arrives next ${t}`).getAttribute('data-seq'));
    assert.equal(next, lost + 1);
    const bodies = (await shownMessages(doc.page)).map((m) => m.body);
    assert.ok(bodies.indexOf(`lost on the way ${t}`) < bodies.indexOf(`arrives next ${t}`), 'shown in seq order');
    assertClean(pat, doc);
  });

  test('an unacknowledged send and a send made offline are retried on reconnect and shown once', { timeout: 90000 }, async () => {
    const gate = wsGate();
    const pat = await as(PATIENT, { routeWs: gate.handler });
    const doc = await as(DOCTOR);
    await openChat(pat.page, DOCTOR);
    await openChat(doc.page, PATIENT);
    const t = tag();

    // 1. The server stores A but its ack never reaches the page.
    gate.dropAcks = true;
    await send(pat.page, `ack lost ${t}`);
    await bubbles(doc.page, `ack lost ${t}`).waitFor({ timeout: 5000 });
    await eventually(() => gate.dropped > 0, { message: 'ack dropped' });
    assert.equal(await statusOf(pat.page, `ack lost ${t}`), 'sending');

    // 2. The connection drops; B is written while offline.
    gate.block = true;
    gate.dropAcks = false;
    await gate.cut();
    await eventually(async () => (await pat.page.getByTestId('connection-status').getAttribute('data-state')) !== 'connected', {
      message: 'patient sees the connection drop',
    });
    // The browser goes offline too: the status says so.
    await pat.context.setOffline(true);
    await eventuallyEqual(() => pat.page.getByTestId('connection-status').getAttribute('data-state'), 'offline', {
      message: 'status offline',
    });
    await send(pat.page, `offline ${t}`);
    await sleep(300);
    assert.equal(await statusOf(pat.page, `offline ${t}`), 'sending');
    assert.equal(await bubbles(doc.page, `offline ${t}`).count(), 0);
    await screenshot(pat.page, 'desktop-patient-offline.png');

    // 3. The network is back (the browser's online event reconnects at
    // once): both are (re)sent with their client_msg_id.
    gate.block = false;
    await pat.context.setOffline(false);
    await waitConnected(pat.page, 10000);
    for (const body of [`ack lost ${t}`, `offline ${t}`]) {
      await eventually(async () => ['sent', 'read'].includes(await statusOf(pat.page, body)), { message: `${body} acked` });
      await bubbles(doc.page, body).waitFor({ timeout: 5000 });
    }
    await sleep(1500); // any duplicate would have arrived
    for (const page of [pat.page, doc.page]) {
      assert.equal(await bubbles(page, `ack lost ${t}`).count(), 1, 'A shown once');
      assert.equal(await bubbles(page, `offline ${t}`).count(), 1, 'B shown once');
      await assertOrderedOnce(page);
    }
    const seqA = Number(await bubbles(doc.page, `ack lost ${t}`).getAttribute('data-seq'));
    const seqB = Number(await bubbles(doc.page, `offline ${t}`).getAttribute('data-seq'));
    assert.equal(seqB, seqA + 1, 'idempotent re-send stored nothing twice');
    assertClean(pat, doc);
  });

  test('after a server restart the client reconnects and shows the message it missed', { timeout: 180000 }, async () => {
    const cmd = process.env.CHAT_RESTART_CMD;
    assert.ok(
      cmd && cmd.trim(),
      'CHAT_RESTART_CMD is not set: this test must restart the server. Set it to a shell command that restarts ' +
        'the gateway at CHAT_URL and returns once it serves again (scripts/browser-tests.sh sets it to ' +
        '"scripts/browser-tests.sh --restart").',
    );
    const gate = wsGate();
    const pat = await as(PATIENT);
    const doc = await as(DOCTOR, { routeWs: gate.handler });
    await openChat(pat.page, DOCTOR);
    await openChat(doc.page, PATIENT);
    const t = tag();
    await send(pat.page, `before restart ${t}`);
    await bubbles(doc.page, `before restart ${t}`).waitFor({ timeout: 5000 });

    // The doctor will stay away a little longer than the patient, so the
    // patient's next message is one the doctor misses.
    gate.block = true;
    await runShell(cmd, { timeout: 120000 });
    await waitConnected(pat.page, 40000);
    assert.notEqual(await doc.page.getByTestId('connection-status').getAttribute('data-state'), 'connected');
    await send(pat.page, `while you were away ${t}`);
    await eventually(async () => ['sent', 'read'].includes(await statusOf(pat.page, `while you were away ${t}`)), {
      timeout: 20000,
      message: 'acked after the restart',
    });
    assert.equal(await bubbles(doc.page, `while you were away ${t}`).count(), 0);
    await screenshot(doc.page, 'desktop-doctor-reconnecting.png');

    gate.block = false;
    await waitConnected(doc.page, 60000);
    const missed = bubbles(doc.page, `while you were away ${t}`);
    await missed.waitFor({ timeout: 10000 });
    await sleep(1000);
    assert.equal(await missed.count(), 1);
    assert.equal(await bubbles(doc.page, `before restart ${t}`).count(), 1);
    await assertOrderedOnce(doc.page);
    // And the reconnected session is live again.
    await send(doc.page, `welcome back ${t}`);
    await bubbles(pat.page, `welcome back ${t}`).waitFor({ timeout: 10000 });
    await screenshot(doc.page, 'desktop-doctor-after-restart.png');
    // Errors logged by the browser about the refused/cut connections are expected here.
    assert.deepEqual(pat.dialogs, []);
    assert.deepEqual(doc.dialogs, []);
  });

  test('mobile layout: one pane at a time with a back button', { timeout: 60000 }, async () => {
    const context = await browser.newContext({ viewport: MOBILE, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    contexts.push(context);
    const pick = await context.newPage();
    await pick.goto(`${BASE}/`);
    await pick.getByTestId('user-option').first().waitFor();
    await screenshot(pick, 'mobile-picker.png');
    await context.close();

    // The doctor first: the patient's list then shows them online.
    const doc = await as(DOCTOR);
    const pat = await as(PATIENT, { viewport: MOBILE, mobile: true });
    await openChat(doc.page, PATIENT);
    const page = pat.page;
    const list = page.getByTestId('chat-list');
    const conversation = page.getByTestId('conversation');
    assert.equal(await list.isVisible(), true);
    assert.equal(await conversation.isVisible(), false, 'conversation pane hidden on the list view');
    const t = tag();
    await send(doc.page, `Your results are in ${t}`);
    await page.getByTestId('toast').filter({ hasText: t }).waitFor({ timeout: 5000 });
    await screenshot(page, 'mobile-list.png');

    await chatItem(page, DOCTOR).click();
    await bubbles(page, t).waitFor();
    assert.equal(await list.isVisible(), false, 'list hidden in the conversation view');
    assert.equal(await page.getByTestId('back-button').isVisible(), true);
    await send(page, `Thank you, doctor ${t}`);
    await bubbles(doc.page, `Thank you, doctor ${t}`).waitFor({ timeout: 5000 });
    await eventuallyEqual(() => statusOf(page, `Thank you, doctor ${t}`), 'read', { message: 'read on mobile' });
    await doc.page.getByTestId('composer-input').pressSequentially('You are welcome', { delay: 20 });
    await page.getByTestId('typing-indicator').waitFor({ state: 'visible', timeout: 5000 });
    await screenshot(page, 'mobile-conversation.png');

    await page.getByTestId('back-button').click();
    assert.equal(await list.isVisible(), true);
    assert.equal(await conversation.isVisible(), false);

    // Desktop shows both panes and no back button.
    assert.equal(await doc.page.getByTestId('chat-list').isVisible(), true);
    assert.equal(await doc.page.getByTestId('conversation').isVisible(), true);
    assert.equal(await doc.page.getByTestId('back-button').isVisible(), false);
    assertClean(pat, doc);
  });

  test('quick sends keep their order through the rate limit; older history loads page by page', { timeout: 120000 }, async () => {
    const peer = 'doc-ben';
    const pat = await as(PATIENT);
    await openChat(pat.page, peer);
    const t = tag();
    // Burst past SEND_BURST (default 30): some sends are refused `rate_limited`
    // with retry_after_ms and retried; the order must still be the typing order.
    const n = 45;
    const input = pat.page.getByTestId('composer-input');
    for (let i = 0; i < n; i++) {
      await input.fill(`burst ${t} #${i}`);
      await input.press('Enter');
    }
    await eventually(async () => (await pat.page.locator('[data-testid="message"][data-status="sending"]').count()) === 0, {
      timeout: 30000,
      message: 'every burst message acknowledged',
    });
    const mine = (await shownMessages(pat.page)).filter((m) => m.body.startsWith(`burst ${t} #`));
    assert.equal(mine.length, n, 'each message once');
    assert.deepEqual(mine.map((m) => m.body), [...Array(n).keys()].map((i) => `burst ${t} #${i}`), 'seq order = typing order');
    assert.equal(await pat.page.locator('[data-testid="message"][data-status="failed"]').count(), 0);
    await assertOrderedOnce(pat.page);
    const lastSeq = Math.max(...(await shownMessages(pat.page)).map((m) => m.seq));

    // A fresh session shows the latest page, then older pages on request.
    const again = await as(PATIENT);
    await openChat(again.page, peer);
    const page = again.page;
    const first = (await shownMessages(page)).length;
    assert.equal(first, Math.min(50, lastSeq), 'the latest page');
    const older = page.getByTestId('load-older');
    let pages = 0;
    while (await older.isVisible()) {
      const before = (await shownMessages(page)).length;
      await older.click();
      await eventually(async () => (await shownMessages(page)).length > before, { message: 'an older page' });
      pages += 1;
      assert.ok(pages < 100);
    }
    await page.locator('#history-start').waitFor();
    const seqs = (await shownMessages(page)).map((m) => m.seq);
    assert.deepEqual(seqs, [...Array(lastSeq).keys()].map((i) => i + 1), 'the whole history, 1..last, once, in order');
    assertClean(pat, again);
  });

  test('accessibility: no WCAG 2.1 A/AA violations found by axe-core (picker, desktop, mobile)', { timeout: 60000 }, async () => {
    const picker = await browser.newContext({ viewport: DESKTOP, bypassCSP: true });
    contexts.push(picker);
    const pp = await picker.newPage();
    await pp.goto(`${BASE}/`);
    await pp.getByTestId('user-option').first().waitFor();
    assert.deepEqual(await axeViolations(pp), [], 'user picker');

    const doc = await as(DOCTOR, { bypassCSP: true });
    const pat = await as(PATIENT, { viewport: MOBILE, mobile: true, bypassCSP: true });
    await openChat(doc.page, PATIENT);
    const t = tag();
    await send(doc.page, `Checking in ${t}`);
    await pat.page.getByTestId('toast').filter({ hasText: t }).waitFor({ timeout: 5000 });
    assert.deepEqual(await axeViolations(pat.page), [], 'mobile list with a toast and a badge');
    await chatItem(pat.page, DOCTOR).click();
    await bubbles(pat.page, t).waitFor();
    await send(pat.page, `Thanks ${t}`);
    await bubbles(doc.page, `Thanks ${t}`).waitFor({ timeout: 5000 });
    assert.deepEqual(await axeViolations(pat.page), [], 'mobile conversation');
    assert.deepEqual(await axeViolations(doc.page), [], 'desktop conversation');

    // Keyboard: Tab reaches the conversations and the composer, with a visible focus style.
    await doc.page.getByTestId('composer-input').focus();
    const outline = await doc.page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
    assert.notEqual(outline, 'none', 'focused composer has an outline');
    assert.equal(await doc.page.getByTestId('composer-input').getAttribute('aria-describedby'), 'composer-help');
  });
});
