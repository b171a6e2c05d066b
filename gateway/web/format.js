// Date and time formatting for the chat list and the message pane (local time).

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const weekdayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'long' });
const shortDateFmt = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });
const longDateFmt = new Intl.DateTimeFormat(undefined, {
  weekday: 'short', day: 'numeric', month: 'short', year: 'numeric',
});
const sameYearDateFmt = new Intl.DateTimeFormat(undefined, {
  weekday: 'short', day: 'numeric', month: 'short',
});
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'short' });

/** Parses an RFC 3339 timestamp; an unparsable one gives null. */
export function parseTime(s) {
  if (!s) return null;
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** Local calendar day of a date, as a comparable key "YYYY-MM-DD". */
export function dayKey(d) {
  const y = d.getFullYear();
  const m = String(d.getMonth() + 1).padStart(2, '0');
  const day = String(d.getDate()).padStart(2, '0');
  return `${y}-${m}-${day}`;
}

function daysBetween(a, b) {
  const da = new Date(a.getFullYear(), a.getMonth(), a.getDate());
  const db = new Date(b.getFullYear(), b.getMonth(), b.getDate());
  return Math.round((db - da) / 86400000);
}

/** "14:05". */
export function formatTime(d) {
  return timeFmt.format(d);
}

/** Full date and time, for title attributes and screen readers. */
export function formatFull(d) {
  return fullFmt.format(d);
}

/** Date separator label: "Today", "Yesterday", "Mon, 3 Mar" or "Mon, 3 Mar 2024". */
export function formatDay(d, now = new Date()) {
  const diff = daysBetween(d, now);
  if (diff === 0) return 'Today';
  if (diff === 1) return 'Yesterday';
  return d.getFullYear() === now.getFullYear() ? sameYearDateFmt.format(d) : longDateFmt.format(d);
}

/** Chat list timestamp: time today, "Yesterday", weekday this week, else a short date. */
export function formatListTime(d, now = new Date()) {
  const diff = daysBetween(d, now);
  if (diff === 0) return formatTime(d);
  if (diff === 1) return 'Yesterday';
  if (diff > 1 && diff < 7) return weekdayFmt.format(d);
  return d.getFullYear() === now.getFullYear() ? shortDateFmt.format(d) : longDateFmt.format(d);
}

/** Initials for an avatar: "Dr Ana Silva" -> "AS". */
export function initials(name) {
  const words = String(name || '?')
    .split(/\s+/)
    .filter((w) => w && !/^(dr|dr\.|mr|mrs|ms|prof)$/i.test(w));
  const letters = words.slice(0, 2).map((w) => w[0].toUpperCase());
  return letters.join('') || '?';
}
