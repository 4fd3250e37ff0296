<?php
// The PHP session flow of tests/tests/libs.rs: php-redis's session handler, locking on, used
// unchanged against a tandem pair.
//
//   php flow.php        (env TANDEM_A, TANDEM_B = host:port)
//
// Two `php -S` servers run app.php, one with its sessions on node A and one on node B: the
// user logs in through A, reads and updates the session through B, a short session expires,
// and the user logs out through B. Every PHP warning in a server (a refused command makes the
// handler warn and fail) is an error, and the servers' logs are checked for any.

// The servers' logs, shown when a step fails.
$logs = [];

function fail(string $msg): void
{
    global $logs;
    fwrite(STDERR, "FAIL php-redis: $msg\n");
    foreach ($logs as $log) {
        fwrite(STDERR, "--- $log\n" . @file_get_contents($log));
    }
    exit(1);
}

function node(string $var): array
{
    $v = getenv($var);
    $at = $v === false ? false : strrpos($v, ':');
    if ($at === false) {
        fail("$var must be host:port");
    }
    return [substr($v, 0, $at), (int)substr($v, $at + 1)];
}

function free_port(): int
{
    $s = stream_socket_server('tcp://127.0.0.1:0');
    $port = (int)substr(strrchr(stream_socket_get_name($s, false), ':'), 1);
    fclose($s);
    return $port;
}

// Starts `php -S` for app.php with its sessions on node $host:$port; returns [process, port, log].
function server(array $node): array
{
    [$host, $port] = $node;
    $web = free_port();
    global $logs;
    $log = tempnam(sys_get_temp_dir(), 'tandem-php-');
    $logs[] = $log;
    $ini = [
        'session.save_handler=redis',
        "session.save_path=tcp://$host:$port",
        'session.use_strict_mode=1',
        'session.gc_maxlifetime=600',
        'redis.session.locking_enabled=1',
        'redis.session.lock_expire=5',
        'redis.session.lock_wait_time=20000',
        'redis.session.lock_retries=50',
        'display_errors=stderr',
        'log_errors=0',
        'error_reporting=-1',
    ];
    $cmd = [PHP_BINARY];
    foreach ($ini as $i) {
        array_push($cmd, '-d', $i);
    }
    array_push($cmd, '-S', "127.0.0.1:$web", __DIR__ . '/app.php');
    $proc = proc_open($cmd, [0 => ['file', '/dev/null', 'r'], 1 => ['file', $log, 'a'], 2 => ['file', $log, 'a']], $pipes);
    for ($i = 0; $i < 100; $i++) {
        $c = @fsockopen('127.0.0.1', $web, $errno, $errstr, 0.1);
        if ($c) {
            fclose($c);
            return [$proc, $web, $log];
        }
        usleep(50000);
    }
    fail("php -S on $web never listened: " . file_get_contents($log));
}

// One request; returns [status, decoded body, cookie to send next].
function call(array $srv, string $method, string $path, ?string $cookie): array
{
    $headers = $cookie ? "Cookie: $cookie\r\n" : '';
    $ctx = stream_context_create(['http' => ['method' => $method, 'header' => $headers, 'ignore_errors' => true, 'timeout' => 10]]);
    $body = file_get_contents("http://127.0.0.1:{$srv[1]}$path", false, $ctx);
    $status = (int)explode(' ', $http_response_header[0])[1];
    foreach ($http_response_header as $h) {
        if (stripos($h, 'Set-Cookie: ') === 0) {
            $cookie = explode(';', substr($h, 12))[0];
        }
    }
    return [$status, json_decode((string)$body, true), $cookie];
}

function expect(string $step, array $r, array $want): void
{
    if ($r[0] !== 200 || $r[1] !== $want) {
        fail("$step: HTTP {$r[0]} " . json_encode($r[1]) . ', want ' . json_encode($want));
    }
    echo "ok $step\n";
}

$a = server(node('TANDEM_A'));
$b = server(node('TANDEM_B'));
try {
    $r = call($a, 'POST', '/login?user=alice', null);
    expect('login through A', $r, ['ok' => true]);
    $c = $r[2] ?? fail('login set no cookie');
    expect('read through B', call($b, 'GET', '/me', $c), ['user' => 'alice', 'theme' => null]);
    expect('update through B', call($b, 'POST', '/update?theme=dark', $c), ['ok' => true]);
    expect('read the update through A', call($a, 'GET', '/me', $c), ['user' => 'alice', 'theme' => 'dark']);

    $r = call($a, 'POST', '/login?user=bob&ttl=2', null);
    expect('short login through A', $r, ['ok' => true]);
    $bob = $r[2];
    expect('short session read through B', call($b, 'GET', '/me?ttl=2', $bob), ['user' => 'bob', 'theme' => null]);
    usleep(3200000);
    expect('expired through B', call($b, 'GET', '/me', $bob), ['user' => null, 'theme' => null]);

    expect('logout through B', call($b, 'POST', '/logout', $c), ['ok' => true]);
    expect('logged out through A', call($a, 'GET', '/me', $c), ['user' => null, 'theme' => null]);
} finally {
    foreach ([$a, $b] as $s) {
        proc_terminate($s[0]);
        proc_close($s[0]);
    }
}
foreach ([$a, $b] as $s) {
    $log = file_get_contents($s[2]);
    unlink($s[2]);
    if (preg_match('/(warning|error|fatal|notice)/i', $log)) {
        fail("server log:\n$log");
    }
}
echo "PASS php-redis " . phpversion('redis') . "\n";
