#!/usr/bin/env bash
# Renders configs/alertmanager/config.sample.yml into a real Alertmanager config.
#
#   TELEGRAM_BOT_TOKEN=123456:ABC... TELEGRAM_CHAT_ID=-1001234567890 \
#       scripts/render_alertmanager_config.sh [OUTPUT]
#
# OUTPUT defaults to ${XDG_CONFIG_HOME:-~/.config}/crupto/alertmanager.yml (outside the
# repository: the file holds the bot token). Optional: TELEGRAM_API_URL (default
# https://api.telegram.org), ALERTMANAGER_SAMPLE (another template).
# Refuses (exit 2, nothing written) when a variable is missing or malformed, when the
# rendered file still contains an unrendered placeholder, or when `amtool check-config`
# rejects it. Needs envsubst (Debian: gettext-base); amtool (prometheus-alertmanager)
# is used when installed.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
sample="${ALERTMANAGER_SAMPLE:-$repo/configs/alertmanager/config.sample.yml}"
out="${1:-${XDG_CONFIG_HOME:-$HOME/.config}/crupto/alertmanager.yml}"

die() { echo "render_alertmanager_config: $*" >&2; exit 2; }

command -v envsubst >/dev/null 2>&1 || die "envsubst not found (Debian/Ubuntu: apt-get install gettext-base)"
[ -f "$sample" ] || die "template not found: $sample"

missing=()
for var in TELEGRAM_BOT_TOKEN TELEGRAM_CHAT_ID; do
    [ -n "${!var:-}" ] || missing+=("$var")
done
[ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}: export them (the token from @BotFather, the chat id of the alert chat)"
[[ "$TELEGRAM_BOT_TOKEN" =~ ^[0-9]+:[A-Za-z0-9_-]+$ ]] || die "TELEGRAM_BOT_TOKEN does not look like a bot token (<digits>:<letters, digits, _ or ->)"
[[ "$TELEGRAM_CHAT_ID" =~ ^-?[0-9]+$ ]] || die "TELEGRAM_CHAT_ID must be a number (groups are negative, e.g. -1001234567890)"
export TELEGRAM_API_URL="${TELEGRAM_API_URL:-https://api.telegram.org}"
[[ "$TELEGRAM_API_URL" =~ ^https?://[^[:space:]\']+$ ]] || die "TELEGRAM_API_URL must be an http(s) URL"

dir="$(dirname "$out")"
mkdir -p "$dir"
tmp="$(mktemp "$dir/.alertmanager.XXXXXX")"
trap 'rm -f "$tmp"' EXIT

# Only these three variables are substituted; any other '$' is left alone.
envsubst '${TELEGRAM_BOT_TOKEN} ${TELEGRAM_CHAT_ID} ${TELEGRAM_API_URL}' <"$sample" >"$tmp"

if leftovers="$(grep -n '\${' "$tmp")"; then
    die "unrendered placeholder(s) left in the config:"$'\n'"$leftovers"
fi

if command -v amtool >/dev/null 2>&1; then
    if ! check="$(amtool check-config "$tmp" 2>&1)"; then
        # amtool prints the config path only; never echo the rendered file (token).
        die "amtool check-config rejected the rendered config:"$'\n'"$check"
    fi
else
    echo "render_alertmanager_config: amtool not found, config not validated (Alertmanager validates it at start)" >&2
fi

# Readable by the Alertmanager container's user (nobody) through a bind mount; keep the
# directory private instead (the token is a secret).
chmod 0644 "$tmp"
chmod 0700 "$dir" 2>/dev/null || true
mv -f "$tmp" "$out"
trap - EXIT
echo "render_alertmanager_config: wrote $out"
