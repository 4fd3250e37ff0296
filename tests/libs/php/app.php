<?php
// The web app of the PHP flow (flow.php serves it with `php -S`): its sessions go through
// php-redis's session handler (session.save_handler=redis, locking on), whose save_path names
// this server's tandem node.
header('Content-Type: application/json');
$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
if (isset($_GET['ttl'])) {
    ini_set('session.gc_maxlifetime', $_GET['ttl']);
}
if (!session_start()) {
    http_response_code(500);
    exit(json_encode(['error' => 'session_start failed']));
}
switch ($path) {
    case '/login':
        $_SESSION['user'] = $_GET['user'];
        $_SESSION['roles'] = ['reader'];
        echo json_encode(['ok' => true]);
        break;
    case '/me':
        echo json_encode(['user' => $_SESSION['user'] ?? null, 'theme' => $_SESSION['theme'] ?? null]);
        break;
    case '/update':
        $_SESSION['theme'] = $_GET['theme'];
        echo json_encode(['ok' => true]);
        break;
    case '/logout':
        $_SESSION = [];
        echo json_encode(['ok' => session_destroy()]);
        break;
    default:
        http_response_code(404);
}
