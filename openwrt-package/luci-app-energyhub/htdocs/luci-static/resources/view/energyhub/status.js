'use strict';
'require view';
'require rpc';
'require poll';
'require ui';
'require dom';

/*
 * EnergyHub status: one page that answers "is this site healthy?".
 *
 * Everything comes from the ubus object `energyhub` (energyhubd), method `status`, read
 * again by LuCI's poller every 5 s while the page is open (the poller stops with the page).
 * The write actions (diagnostics again, tunnel open/close) are shown only when rpcd's
 * `session access` says this login may call them: the ACL, not the page, decides.
 * Diagnostic reasons are shown from their stable `code` through the translation catalogue;
 * a code this page does not know shows the daemon's English sentence.
 */

var POLL_SECONDS = 5;

var callStatus = rpc.declare({ object: 'energyhub', method: 'status' });
var callDiagnose = rpc.declare({ object: 'energyhub', method: 'diagnose', params: [ 'wait' ] });
var callTunnel = rpc.declare({ object: 'energyhub', method: 'tunnel', params: [ 'action' ] });
var callAccess = rpc.declare({
	object: 'session',
	method: 'access',
	params: [ 'scope', 'object', 'function' ],
	expect: { access: false }
});

/* Plain-language flow names and what a failure means for the site. */
function flowName(flow) {
	switch (flow) {
	case 'dns': return _('Name lookup (DNS)');
	case 'dns_fallback': return _('Name lookup, fallback server');
	case 'ntp': return _('Time server (NTP)');
	case 'clock': return _('Router clock');
	case 'mqtt_tls': return _('Portal connection (MQTT over TLS)');
	case 'mqtt_plain': return _('Portal, unencrypted port 1883');
	case 'gateway': return _('Remote support gateway');
	case 'update_http': return _('Updates (HTTP)');
	case 'update_https': return _('Updates (HTTPS)');
	}
	return flow;
}

function flowConsequence(flow) {
	switch (flow) {
	case 'dns': case 'dns_fallback': return _('Without name lookup nothing else can connect.');
	case 'ntp': case 'clock': return _('The portal may show data at the wrong time.');
	case 'mqtt_tls': case 'mqtt_plain': return _('The portal receives no data from this site.');
	case 'gateway': return _('Ferroamp support cannot reach this site remotely.');
	case 'update_http': case 'update_https': return _('Automatic updates will fail.');
	}
	return '';
}

/* The reason of one diagnostics row in the reader's language, from its stable code. */
function reasonText(row) {
	var p = row.params || {};
	switch (row.code) {
	case 'ok': return _('Works');
	case 'filtered': return _('No answer within %s: a firewall drops the traffic (filtered).').format(p.timeout);
	case 'refused': return _('Connection refused: nothing listens there, or a firewall rejects it.');
	case 'host_unreachable': return _('Host unreachable: no route, or a firewall rejects it.');
	case 'network_unreachable': return _('Network unreachable: the router has no default route.');
	case 'reset': return _('Connection reset: a firewall or proxy cut it.');
	case 'blocked_here': return _('Blocked by this router\'s own firewall.');
	case 'port_unreachable': return _('Nothing answers on that port, or a firewall rejects it.');
	case 'dns_refused': return _('The DNS server refused to look up %s.').format(p.host);
	case 'dns_nxdomain': return _('The DNS server says %s does not exist.').format(p.host);
	case 'dns_failed': return _('The DNS server failed to look up %s (%s).').format(p.host, p.rcode);
	case 'dns_no_address': return _('The DNS server returned no IPv4 address for %s.').format(p.host);
	case 'ntp_unsynchronised': return _('The time server answered but is not synchronised itself.');
	case 'clock_off': return _('The clock is %s off.').format(p.offset);
	case 'clock_unconfirmed': return _('The clock is not confirmed: no time server answered.');
	case 'ssh_no_greeting': return _('Connected, but no SSH greeting came back: a firewall or proxy is in the path.');
	case 'not_ssh': return _('Something other than SSH answered: a firewall or proxy is in the path.');
	case 'tls_expired': return _('TLS to %s: the certificate is expired or not yet valid (issuer: %s); check the router\'s clock.').format(p.host, p.issuer);
	case 'tls_wrong_name': return _('TLS to %s: a certificate for another name (issuer: %s); a device on the customer network redirects the traffic.').format(p.host, p.issuer);
	case 'tls_intercepted': return _('TLS to %s is intercepted by a device on the customer network (issuer: %s).').format(p.host, p.issuer);
	case 'tls_failed': return _('TLS to %s failed: a firewall may block or alter encrypted traffic.').format(p.host);
	case 'tls_no_http': return _('TLS to %s works but no HTTP answer came back.').format(p.host);
	case 'trust_store': return _('The router cannot load its certificate trust store.');
	case 'no_http': return _('Connected, but no HTTP answer came back.');
	case 'unresolved': return _('Cannot look up %s: name lookup (DNS) does not work.').format(p.host);
	}
	return row.reason || '';
}

function deviceHow(reason) {
	if (reason == 'reservation mac') return _('reserved address (MAC)');
	if (reason == 'reservation host name') return _('reserved address (host name)');
	if (reason == 'reservation address') return _('reserved address (IP)');
	if (reason == 'host name pattern') return _('host name');
	if (reason == 'vendor class') return _('DHCP vendor class');
	if (reason == 'no rule matched') return _('not recognised');
	if (/^mac prefix /.test(reason || '')) return _('MAC prefix %s').format(reason.substr(11));
	return reason || '-';
}

/* ISO strings ("2026-11-30T00:21:22Z") and epoch seconds, in the reader's locale. */
function when(v) {
	if (v == null || v === '')
		return '-';
	var d = (typeof v == 'number') ? new Date(v * 1000) : new Date(v);
	if (isNaN(d.getTime()))
		return String(v);
	return d.toLocaleString(document.documentElement.lang || undefined);
}

function label(kind, text) {
	/* .label.success is green and .label.warning amber in the themes; there is no red label
	 * class (.important is the primary colour), so "danger" takes the theme's error colour. */
	var attrs = { 'class': 'label ' + (kind == 'danger' ? '' : kind), 'data-state': kind };
	if (kind == 'danger')
		attrs.style = 'background-color: var(--error-color-high, #d00000); color: var(--on-error-color, #fff)';
	return E('span', attrs, [ text ]);
}

function table(head, rows) {
	return E('table', { 'class': 'table' }, [
		E('tr', { 'class': 'tr table-titles' }, head.map(function(h) {
			return E('th', { 'class': 'th' }, [ h ]);
		}))
	].concat(rows));
}

function row(cells, attrs) {
	return E('tr', Object.assign({ 'class': 'tr' }, attrs || {}), cells.map(function(c) {
		return E('td', { 'class': 'td' }, Array.isArray(c) ? c : [ c ]);
	}));
}

function keyValues(pairs) {
	return E('table', { 'class': 'table' }, pairs.map(function(p) {
		return E('tr', { 'class': 'tr', 'data-key': p[0] }, [
			E('td', { 'class': 'td left', 'width': '33%' }, [ p[1] ]),
			E('td', { 'class': 'td left' }, Array.isArray(p[2]) ? p[2] : [ p[2] ])
		]);
	}));
}

function section(id, title, children) {
	return E('div', { 'class': 'cbi-section', 'id': 'energyhub-' + id }, [
		E('h3', {}, [ title ])
	].concat(children));
}

/* A rejected ubus call in words: the daemon is down, or this login may not read it. */
function callError(err) {
	var msg = (err && err.message) || String(err);
	if (/-32000|Object not found/.test(msg))
		return { kind: 'down', text: _('The EnergyHub service (energyhubd) is not running, so the router cannot report the site\'s state. Wait a minute (it restarts by itself); if this stays, restart the router and call Ferroamp support.') };
	if (/-32002|Access denied/.test(msg))
		return { kind: 'denied', text: _('This login may not read the EnergyHub status.') };
	return { kind: 'error', text: _('The EnergyHub service did not answer: %s').format(msg) };
}

function fetchStatus() {
	return callStatus().then(function(st) {
		if (st == null || typeof st != 'object')
			return { error: callError(new Error('ubus status ' + st)) };
		return { status: st };
	}, function(err) {
		return { error: callError(err) };
	});
}

return view.extend({
	load: function() {
		return Promise.all([
			fetchStatus(),
			callAccess('ubus', 'energyhub', 'tunnel').catch(function() { return false; }),
			callAccess('ubus', 'energyhub', 'diagnose').catch(function() { return false; })
		]);
	},

	/* The problems a person must act on, worst first; empty when the site is healthy. */
	problems: function(st) {
		var out = [], inv = st.inventory || {}, units = inv.units || {},
		    diag = ((st.outbound || {}).diagnostics || {}).last || {},
		    portal = st.portal || {}, policy = st.policy || {};

		if (policy.state && policy.state != 'applied')
			out.push(_('The network policy is not applied (%s).').format(policy.last_error || policy.state));
		if (!(inv.display || {}).present)
			out.push(_('The display is not on the network.'));
		if (units.expected != null && units.online < units.expected)
			out.push(_('Only %d of %d units are online.').format(units.online, units.expected));
		if ((inv.unknown || {}).count > 0)
			out.push(_('%d unknown device(s) on the EnergyHub network.').format(inv.unknown.count));
		(diag.rows || []).forEach(function(r) {
			var line = _('%s fails.').format(flowName(r.flow));
			if (!r.passed && out.indexOf(line) < 0)  /* two NTP servers: one line */
				out.push(line);
		});
		if (portal.enabled && !portal.connected)
			out.push(_('No connection to the Ferroamp portal.'));
		return out;
	},

	renderSummary: function(st) {
		var list = this.problems(st);
		if (!list.length)
			return E('div', { 'class': 'alert-message success', 'id': 'energyhub-verdict', 'data-healthy': 'true' }, [
				E('strong', {}, [ _('This site is healthy.') ])
			]);
		return E('div', { 'class': 'alert-message danger', 'id': 'energyhub-verdict', 'data-healthy': 'false' }, [
			E('strong', {}, [ _('This site needs attention:') ]),
			E('ul', {}, list.map(function(t) { return E('li', {}, [ t ]); }))
		]);
	},

	renderRouter: function(st) {
		var wan = st.wan || {}, lan = st.lan || {}, policy = st.policy || {},
		    portal = st.portal || {}, cfg = st.config || {};
		var proto = (wan.proto == 'dhcp') ? _('from the customer network (DHCP)')
			: (wan.proto == 'static') ? _('fixed (static)') : (wan.proto || '-');
		var pushState = {
			applied: label('success', _('confirmed')),
			pending_confirm: label('warning', _('waiting for confirmation')),
			rolled_back: label('danger', _('rolled back')),
			rejected: label('danger', _('rejected'))
		}[portal.config_state] || (portal.config_state || '-');

		return section('router', _('Router'), [ keyValues([
			[ 'wan', _('WAN address'), [
				(wan.addresses || []).join(', ') || label('danger', _('none')), ' ', E('em', {}, [ proto ])
			] ],
			[ 'lan', _('EnergyHub network (LAN)'), lan.address || '-' ],
			[ 'policy', _('Network policy'), [
				(policy.state == 'applied') ? label('success', _('applied')) : label('danger', policy.state || '-'),
				' ', _('version %s, %s').format(cfg.version != null ? cfg.version : '-', when(policy.last_apply))
			] ],
			[ 'drift', _('Repairs of outside changes'), String(policy.drift_repairs || 0) ],
			[ 'portal', _('Ferroamp portal'), !portal.enabled ? _('not used') : [
				portal.connected ? label('success', _('connected')) : label('danger', _('not connected')),
				' ', portal.connected ? _('since %s').format(when(portal.connected_since)) : (portal.last_reason || '')
			] ],
			[ 'health', _('Last health report'), when(((st.outbound || {}).health || {}).diagnosed_at) ],
			[ 'push', _('Last configuration from the portal'), [
				pushState, ' ', portal.applied_push_version != null ? _('version %s').format(portal.applied_push_version) : ''
			] ]
		]) ]);
	},

	renderDevices: function(st) {
		var inv = st.inventory || {}, units = inv.units || {}, devices = st.devices || [],
		    reservations = ((st.lan || {}).dhcp || {}).reservations || [],
		    expectedDisplay = (reservations.filter(function(r) { return r.name == 'display'; })[0] || {}).ip,
		    rows = [];

		function state(d) {
			if (d.present)
				return label('success', _('online'));
			/* a missing display or unit is a problem; a stranger that left is not */
			return (d.role == 'unknown') ? _('offline') : label('danger', _('offline'));
		}

		var displays = devices.filter(function(d) { return d.role == 'display'; });
		if (!displays.length)
			rows.push(row([ _('Display'), '-', expectedDisplay || '-', '-', '-',
				label('danger', _('missing')), '' ], { 'data-role': 'display', 'data-present': 'false' }));

		devices.slice().sort(function(a, b) {
			var order = { display: 0, unit: 1, unknown: 2 };
			return (order[a.role] - order[b.role]) || String(a.ip).localeCompare(String(b.ip), undefined, { numeric: true });
		}).forEach(function(d) {
			var unknown = d.role == 'unknown';
			var roleText = (d.role == 'display') ? _('Display') : (d.role == 'unit') ? _('Unit') : _('Unknown device');
			var attrs = { 'data-role': d.role, 'data-mac': d.mac, 'data-present': d.present ? 'true' : 'false' };
			/* a stranger on the switch now is red; one that has left stays listed, amber */
			if (unknown && d.present)
				attrs.style = 'background-color: rgba(220, 53, 69, 0.15)';
			rows.push(row([
				unknown ? label(d.present ? 'danger' : 'warning', roleText) : roleText,
				d.name || d.hostname || '-',
				d.ip || '-',
				d.mac,
				deviceHow(d.reason),
				state(d),
				unknown ? _('first seen %s').format(when(d.first_seen)) : ''
			], attrs));
		});

		var complete = units.expected == null || units.online >= units.expected;
		return section('devices', _('Devices'), [
			E('p', { 'id': 'energyhub-units' }, [
				_('Units online: %d of %d expected').format(units.online || 0, units.expected || 0), ' ',
				complete ? label('success', _('complete')) : label('danger', _('missing units'))
			]),
			table([ _('Role'), _('Name'), _('Address'), _('MAC'), _('Identified by'), _('State'), '' ], rows)
		]);
	},

	renderForwards: function(st) {
		var fw = st.forwards || [];
		if (!fw.length)
			return section('forwards', _('Port forwards'), [ E('p', {}, [ _('No port forwards are configured.') ]) ]);
		return section('forwards', _('Port forwards'), [ table(
			[ _('Name'), _('Port on WAN'), _('Only from'), _('Reaches now'), _('State') ],
			fw.map(function(f) {
				return row([
					f.name,
					'%s %d'.format(String(f.proto).toUpperCase(), f.port),
					(f.allow_from || []).join(', ') || _('anyone'),
					f.address ? '%s:%d (%s)'.format(f.address, f.target_port || f.port, f.target) : label('danger', _('%s is not on the network').format(f.target)),
					(f.state == 'open') ? label('success', _('open')) : label('danger', _('closed'))
				], { 'data-forward': f.name });
			})) ]);
	},

	renderFlows: function(st) {
		var diag = (st.outbound || {}).diagnostics || {}, last = diag.last || {}, self = this;
		var children = [];

		if (!last.rows)
			children.push(E('p', {}, [ _('No diagnostics have run yet.') ]));
		else {
			children.push(E('p', {}, [ _('Last run %s.').format(when(last.at)) ]));
			children.push(table([ _('Connection'), _('Target'), _('Result'), _('Why') ],
				last.rows.map(function(r) {
					var why = [ E('span', { 'class': 'energyhub-reason', 'title': r.reason || '' }, [ reasonText(r) ]) ];
					if (!r.passed && flowConsequence(r.flow))
						why.push(E('br'), E('em', {}, [ flowConsequence(r.flow) ]));
					return row([
						flowName(r.flow), r.target,
						r.passed ? label('success', _('passed')) : label('danger', _('failed')),
						why
					], { 'data-flow': r.flow, 'data-code': r.code || '', 'data-passed': r.passed ? 'true' : 'false' });
				})));
		}
		if (this.mayDiagnose)
			children.push(E('div', { 'class': 'cbi-page-actions' }, [
				E('button', {
					'class': 'btn cbi-button cbi-button-action',
					'id': 'energyhub-diagnose',
					'click': ui.createHandlerFn(self, 'handleDiagnose')
				}, [ _('Run diagnostics again') ])
			]));
		return section('flows', _('Outbound connections'), children);
	},

	renderTunnel: function(st) {
		var t = (st.outbound || {}).tunnel || {};
		var stateText = {
			disabled: _('switched off in the configuration'),
			idle: _('closed'),
			running: _('open'),
			backoff: _('retrying'),
			stopped: _('stopped')
		}[t.state] || (t.state || '-');
		var pairs = [
			[ 'tunnel-state', _('State'), [ (t.state == 'running') ? label('warning', stateText) : stateText ] ],
			[ 'tunnel-gateway', _('Gateway'), t.gateway || '-' ]
		];
		if (t.expires_at)
			pairs.push([ 'tunnel-expires', _('Closes by itself at'), when(t.expires_at) ]);
		var children = [ keyValues(pairs) ];
		if (this.mayTunnel && t.mode != 'disabled')
			children.push(E('div', { 'class': 'cbi-page-actions', 'id': 'energyhub-tunnel-buttons' }, [
				E('button', {
					'class': 'btn cbi-button cbi-button-positive', 'id': 'energyhub-tunnel-open',
					'click': ui.createHandlerFn(this, 'handleTunnel', 'open')
				}, [ _('Open support tunnel') ]), ' ',
				E('button', {
					'class': 'btn cbi-button cbi-button-negative', 'id': 'energyhub-tunnel-close',
					'click': ui.createHandlerFn(this, 'handleTunnel', 'close')
				}, [ _('Close support tunnel') ])
			]));
		return section('tunnel', _('Support tunnel'), children);
	},

	update: function(res) {
		var body;
		if (res.error)
			body = [ E('div', {
				'class': 'alert-message ' + (res.error.kind == 'denied' ? 'warning' : 'danger'),
				'id': 'energyhub-unavailable', 'data-kind': res.error.kind
			}, [ E('strong', {}, [ res.error.text ]) ]) ];
		else
			body = [
				this.renderSummary(res.status),
				this.renderRouter(res.status),
				this.renderDevices(res.status),
				this.renderForwards(res.status),
				this.renderFlows(res.status),
				this.renderTunnel(res.status)
			];
		dom.content(this.container, body);
		this.updatedAt = Date.now();
		this.container.setAttribute('data-updated', String(this.updatedAt));
	},

	/* LuCI's poller calls at once when it starts, just after load() read the status: that
	 * first tick is skipped, so the daemon is asked once per POLL_SECONDS at most. */
	pollTick: function() {
		if (Date.now() - this.updatedAt < (POLL_SECONDS - 1) * 1000)
			return Promise.resolve();
		return this.refresh();
	},

	refresh: function() {
		return fetchStatus().then(L.bind(this.update, this));
	},

	/* A daemon refusal arrives as {error: "<sentence>"} inside a successful call. */
	answer: function(res) {
		if (res && typeof res == 'object' && res.error)
			ui.addNotification(null, E('p', {}, [ res.error ]), 'danger');
		return this.refresh();
	},

	handleDiagnose: function() {
		return callDiagnose(false).then(L.bind(this.answer, this), function(err) {
			ui.addNotification(null, E('p', {}, [ callError(err).text ]), 'danger');
		});
	},

	handleTunnel: function(action) {
		return callTunnel(action).then(L.bind(this.answer, this), function(err) {
			ui.addNotification(null, E('p', {}, [ callError(err).text ]), 'danger');
		});
	},

	render: function(data) {
		this.mayTunnel = data[1] === true;
		this.mayDiagnose = data[2] === true;
		this.container = E('div', { 'id': 'energyhub-body' });
		this.update(data[0]);
		poll.add(L.bind(this.pollTick, this), POLL_SECONDS);

		return E('div', { 'class': 'cbi-map', 'id': 'energyhub-status' }, [
			E('h2', {}, [ _('EnergyHub') ]),
			E('div', { 'class': 'cbi-map-descr' }, [ _('The state of this EnergyHub site, updated every %d seconds.').format(POLL_SECONDS) ]),
			this.container
		]);
	},

	handleSave: null,
	handleSaveApply: null,
	handleReset: null
});
