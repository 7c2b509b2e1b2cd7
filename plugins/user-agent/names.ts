// Plausible's names for browsers, operating systems and device classes (spec/plausible-dialect.md §8).
//
// Plausible parses with `ua_inspector` (Matomo's Device Detector rules) and then renames a few
// clients; we parse with ua-parser-js 1.x, so these tables translate ua-parser's names into the names
// Device Detector gives, with Plausible's renames already applied. Names ua-parser and Device Detector
// share are not listed. Keys are lower case: ua-parser keeps the case of the user-agent text for
// some names (`vivaldi/…` gives `vivaldi`).

/** Clients Device Detector types as "mobile app" (in-app browsers): stored as `Mobile App`, no version. */
const MOBILE_APPS = new Set([
  'facebook',
  'instagram',
  'snapchat',
  'tiktok',
  'wechat',
  'line',
  'kakaotalk',
  'kakaostory',
  'naver',
  'daum',
  'alipay',
  'twitter',
  'linkedin',
  'weibo',
  'klarna',
  // The Google Search app on iOS ("Google Search App" in Device Detector).
  'gsa',
])

/** Chrome's Android WebView: `Mobile App`, but keeping its version (Plausible's `Chrome Webview` rule). */
const WEBVIEW = 'chrome webview'

export const MOBILE_APP = 'Mobile App'

const BROWSERS: Record<string, string> = {
  // Plausible's renames of Device Detector's mobile variants.
  'mobile safari': 'Safari',
  'mobile chrome': 'Chrome',
  'chrome mobile': 'Chrome',
  'mobile firefox': 'Firefox',
  'opera mini': 'Opera',
  'opera mobi': 'Opera',
  'opera mobile': 'Opera',
  'opera tablet': 'Opera',
  'yandex browser lite': 'Yandex Browser',
  // Device Detector's spelling of what ua-parser names otherwise.
  edge: 'Microsoft Edge',
  ie: 'Internet Explorer',
  iemobile: 'IE Mobile',
  'samsung internet': 'Samsung Browser',
  yandex: 'Yandex Browser',
  ucbrowser: 'UC Browser',
  silk: 'Mobile Silk',
  duckduckgo: 'DuckDuckGo Privacy Browser',
  whale: 'Whale Browser',
  qqbrowser: 'QQ Browser',
  qqbrowserlite: 'QQ Browser Lite',
  baidu: 'Baidu Browser',
  '360': '360 Browser',
  'opera coast': 'Coast',
  'sogou mobile': 'Sogou Mobile Browser',
  'chrome headless': 'Headless Chrome',
  epiphany: 'GNOME Web',
  palemoon: 'Pale Moon',
  'k-meleon': 'K-meleon',
  lbbrowser: 'Cheetah Browser',
  kindle: 'Kindle Browser',
  klar: 'Firefox Focus',
  'vivo browser': 'vivo Browser',
  // Names whose case ua-parser takes from the user-agent text.
  chrome: 'Chrome',
  chromium: 'Chromium',
  firefox: 'Firefox',
  safari: 'Safari',
  opera: 'Opera',
  vivaldi: 'Vivaldi',
  brave: 'Brave',
  maxthon: 'Maxthon',
  konqueror: 'Konqueror',
  midori: 'Midori',
  puffin: 'Puffin',
  iron: 'Iron',
  iridium: 'Iridium',
  falkon: 'Falkon',
  qupzilla: 'QupZilla',
  rekonq: 'Rekonq',
  waterfox: 'Waterfox',
  basilisk: 'Basilisk',
  lunascape: 'Lunascape',
  sleipnir: 'Sleipnir',
  netsurf: 'NetSurf',
  lynx: 'Lynx',
  camino: 'Camino',
  iceweasel: 'Iceweasel',
  icedragon: 'IceDragon',
  fennec: 'Fennec',
  skyfire: 'Skyfire',
  rockmelt: 'RockMelt',
  flock: 'Flock',
}

const OPERATING_SYSTEMS: Record<string, string> = {
  'mac os': 'Mac',
  macos: 'Mac',
  linux: 'GNU/Linux',
  'chromium os': 'Chrome OS',
  'chrome os': 'Chrome OS',
  ios: 'iOS',
  android: 'Android',
  'android-x86': 'Android',
  windows: 'Windows',
  'windows phone': 'Windows Phone',
  'windows mobile': 'Windows Mobile',
  'windows ce': 'Windows CE',
  kaios: 'KaiOS',
  harmonyos: 'HarmonyOS',
  blackberry: 'BlackBerry OS',
  'rim tablet os': 'BlackBerry Tablet OS',
  symbian: 'Symbian OS',
  series40: 'Symbian OS Series 40',
  'firefox os': 'Firefox OS',
  webos: 'webOS',
  palm: 'palmOS',
  suse: 'SUSE',
  opensuse: 'SUSE',
  'red hat': 'Red Hat',
  redhat: 'Red Hat',
  arch: 'Arch Linux',
  'arch linux': 'Arch Linux',
  mint: 'Mint',
  debian: 'Debian',
  ubuntu: 'Ubuntu',
  kubuntu: 'Kubuntu',
  xubuntu: 'Xubuntu',
  lubuntu: 'Lubuntu',
  fedora: 'Fedora',
  centos: 'CentOS',
  gentoo: 'Gentoo',
  slackware: 'Slackware',
  mageia: 'Mageia',
  mandriva: 'Mandriva',
  deepin: 'Deepin',
  knoppix: 'Knoppix',
  sabayon: 'Sabayon',
  freebsd: 'FreeBSD',
  openbsd: 'OpenBSD',
  netbsd: 'NetBSD',
  dragonfly: 'DragonFly',
  solaris: 'Solaris',
  aix: 'AIX',
  'hp-ux': 'HP-UX',
  irix: 'IRIX',
  playstation: 'PlayStation',
  xbox: 'Xbox',
  nintendo: 'Nintendo',
  tizen: 'Tizen',
  watchos: 'watchOS',
  fuchsia: 'Fuchsia',
  haiku: 'Haiku OS',
  beos: 'BeOS',
  'amiga os': 'AmigaOS',
  morphos: 'MorphOS',
  'risc os': 'RISC OS',
  'os/2': 'OS/2',
  bada: 'Bada',
  meego: 'MeeGo',
  maemo: 'Maemo',
  sailfish: 'Sailfish OS',
}

/**
 * Device Detector's desktop operating systems (its Windows, Mac, GNU/Linux, Chrome OS, Unix, BeOS,
 * AmigaOS and IBM families): with no device type of its own, a client on one of these is a desktop.
 */
const DESKTOP_OS = new Set([
  'Windows',
  'Mac',
  'Chrome OS',
  'GNU/Linux',
  'Ubuntu',
  'Kubuntu',
  'Xubuntu',
  'Lubuntu',
  'Debian',
  'Fedora',
  'Mint',
  'Arch Linux',
  'CentOS',
  'Red Hat',
  'SUSE',
  'Gentoo',
  'Slackware',
  'Mageia',
  'Mandriva',
  'Deepin',
  'Knoppix',
  'Sabayon',
  'FreeBSD',
  'OpenBSD',
  'NetBSD',
  'DragonFly',
  'Solaris',
  'AIX',
  'HP-UX',
  'IRIX',
  'BeOS',
  'Haiku OS',
  'AmigaOS',
  'MorphOS',
  'OS/2',
])

/** The fields the plugin writes, as one frozen value per distinct user agent. */
export interface UserAgentInfo {
  readonly browser: string
  readonly browser_version: string
  readonly operating_system: string
  readonly operating_system_version: string
  readonly screen_size: string
}

export const UNKNOWN_AGENT: UserAgentInfo = Object.freeze({
  browser: '',
  browser_version: '',
  operating_system: '',
  operating_system_version: '',
  screen_size: '',
})

/** What ua-parser-js 1.x reports, reduced to the parts used here. */
export interface ParsedAgent {
  browser: { name?: string | undefined; version?: string | undefined }
  os: { name?: string | undefined; version?: string | undefined }
  device: { type?: string | undefined; vendor?: string | undefined; model?: string | undefined }
}

/** `70.0.3538.110` → `70.0`, `11` → `11` (Plausible's `major_minor`). */
export function majorMinor(version: string | undefined): string {
  if (!version) return ''
  const first = version.indexOf('.')
  if (first < 0) return version
  const second = version.indexOf('.', first + 1)
  return second < 0 ? version : version.slice(0, second)
}

/** Translates one ua-parser result into Plausible's column values; `ua` is the (capped) text it came from. */
export function describeAgent(parsed: ParsedAgent, ua: string): UserAgentInfo {
  const rawBrowser = parsed.browser.name ?? ''
  const browserKey = rawBrowser.toLowerCase()
  let browser: string
  let browserVersion: string
  if (browserKey === WEBVIEW) {
    browser = MOBILE_APP
    browserVersion = majorMinor(parsed.browser.version)
  } else if (MOBILE_APPS.has(browserKey)) {
    browser = MOBILE_APP
    browserVersion = ''
  } else {
    browser = BROWSERS[browserKey] ?? rawBrowser
    browserVersion = browser === '' ? '' : majorMinor(parsed.browser.version)
  }

  const rawOs = parsed.os.name ?? ''
  let os = OPERATING_SYSTEMS[rawOs.toLowerCase()] ?? rawOs
  let osVersion = os === '' ? '' : majorMinor(parsed.os.version)
  const model = parsed.device.model ?? ''
  if (os === 'iOS' && model === 'iPad' && Number.parseInt(osVersion, 10) >= 13) {
    // Device Detector names iPads on 13 and later (when iPadOS split from iOS) `iPadOS`.
    os = 'iPadOS'
  } else if (os === 'HarmonyOS') {
    // ua-parser reports the Android version beside it; Device Detector reports none for this form.
    osVersion = ''
  } else if (os === 'Windows' && osVersion === 'RT') {
    os = 'Windows RT'
    osVersion = ''
  }

  return Object.freeze({
    browser,
    browser_version: browserVersion,
    operating_system: os,
    operating_system_version: osVersion,
    screen_size: screenSize(parsed, os, osVersion, browserKey, ua),
  })
}

/** Plausible's device classes from Device Detector's device types (event.ex `screen_size`). */
function screenSize(parsed: ParsedAgent, os: string, osVersion: string, browserKey: string, ua: string): string {
  switch (parsed.device.type) {
    case 'mobile':
    case 'wearable':
      return 'Mobile'
    case 'tablet':
      return 'Tablet'
    case 'smarttv':
    case 'console':
      return 'Desktop'
    case 'embedded':
      // Car browsers count as tablets; other embedded devices (smart speakers, displays) have no class.
      return parsed.device.vendor === 'Tesla' ? 'Tablet' : ''
    case undefined:
      break
    default:
      return ''
  }
  // No device type from the parser: Device Detector's fallbacks.
  if (os === 'Android' || os === 'HarmonyOS') {
    // Android browsers say `Mobile` on phones; without it the device is a tablet. Opera Mini runs on
    // phones and never says it.
    return ua.includes('Mobile') || browserKey === 'opera mini' ? 'Mobile' : 'Tablet'
  }
  if (os === 'Windows RT') return 'Tablet'
  if (os === 'Windows' && ua.includes('Touch') && Number.parseFloat(osVersion) >= 8) return 'Tablet'
  if (DESKTOP_OS.has(os)) return 'Desktop'
  return ''
}
