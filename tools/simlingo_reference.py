#!/usr/bin/env python3
"""Reference values for src/control.rs.

Re-implements SimLingo's controller (RenzKa/simlingo, Apache-2.0: agent_simlingo.py control_pid /
interpolate_waypoints / stuck block of run_step, nav_planner.LateralPIDController,
transfuser_utils.PIDController, config_simlingo) with numpy + scipy's real PchipInterpolator, keeping
the dtypes SimLingo runs with (float32 model outputs and speed tensor, numpy 1.23 semantics where
numpy 2 differs: the object-array mean of the speed window, and np.arange's length computed in f64).

Run: /work/scratch/venv/bin/python tools/simlingo_reference.py   (venv: pip install numpy scipy)
It prints Rust literals that the tests in src/control.rs hard-code.
"""
import math
from collections import deque

import numpy as np
from scipy.interpolate import PchipInterpolator

# ---- config_simlingo / nav_planner constants
CARLA_FPS, WP_DILATION, DATA_SAVE_FREQ = 20, 1, 5
BRAKE_SPEED, BRAKE_RATIO, CLIP_DELTA, CLIP_THROTTLE = 0.4, 1.1, 1.0, 1.0
SPEED_KP, SPEED_KI, SPEED_KD, SPEED_N = 1.75, 1.0, 2.0, 20
STUCK_THRESHOLD, CREEP_DURATION, CREEP_THROTTLE = 800, 15, 0.4


class LateralPIDController:
    def __init__(self, k_p=3.118357247806046, k_d=1.3782508892109167, k_i=0.6406067986034124,
                 speed_scale=0.9755321901954155, speed_offset=1.9152884533402488, n=6):
        self.k_p, self.k_d, self.k_i = k_p, k_d, k_i
        self.speed_scale, self.speed_offset, self.n = speed_scale, speed_offset, n
        self._window = []
        self.last_index = None

    def step(self, route_np, current_speed):
        current_speed = current_speed * 3.6  # float32 array stays float32
        n_lookahead = np.clip(self.speed_scale * current_speed + self.speed_offset, 24, 105)
        # original: int(min(arr, len-1)) on a 1-element array (numpy 2 refuses int() on ndim>0)
        n_lookahead = int(min(n_lookahead[0], route_np.shape[0] - 1))
        n_lookahead = min(n_lookahead, len(route_np) - 1)
        self.last_index = n_lookahead
        desired_heading_vec = route_np[n_lookahead]
        yaw_path = np.arctan2(desired_heading_vec[1], desired_heading_vec[0])
        heading_error = (yaw_path) % (2 * np.pi)
        heading_error = heading_error if heading_error < np.pi else heading_error - 2 * np.pi
        heading_error = heading_error * 180. / np.pi / 90.
        self._window.append(heading_error)
        self._window = self._window[-self.n:]
        derivative = 0. if len(self._window) == 1 else self._window[-1] - self._window[-2]
        integral = np.mean(self._window)
        return np.clip(self.k_p * heading_error + self.k_d * derivative + self.k_i * integral, -1., 1.).item()


class PIDController:
    def __init__(self, k_p, k_i, k_d, n):
        self.k_p, self.k_i, self.k_d = k_p, k_i, k_d
        self.window = deque([0 for _ in range(n)], maxlen=n)

    def step(self, error):
        self.window.append(error)
        # numpy 1.23 turns [0, .., array([e])] into an object array: sequential float32 sum / n.
        integral = np.mean(np.array(list(self.window), dtype=object))
        derivative = self.window[-1] - self.window[-2]
        return self.k_p * error + self.k_i * integral + self.k_d * derivative


def interpolate_waypoints(waypoints):
    waypoints = waypoints.copy()
    waypoints = np.concatenate((np.zeros_like(waypoints[:1]), waypoints))
    shift = np.roll(waypoints, 1, axis=0)
    shift[0] = shift[1]
    dists = np.linalg.norm(waypoints - shift, axis=1)
    dists = np.cumsum(dists)
    dists += np.arange(0, len(dists)) * 1e-4
    interp = PchipInterpolator(dists, waypoints, axis=0)
    # numpy 1.23 computes arange's length from (stop - start) in float64; numpy 2 would use float32.
    x = np.arange(0.1, float(dists[-1]), 0.1)
    interp_points = interp(x)
    if interp_points.shape[0] == 0:
        interp_points = waypoints[None, -1]
    return interp_points


class Agent:
    def __init__(self):
        self.speed_controller = PIDController(SPEED_KP, SPEED_KI, SPEED_KD, SPEED_N)
        self.turn_controller = LateralPIDController()
        self.stuck_detector = 0
        self.force_move = 0

    def control_pid(self, route_waypoints, speed, speed_waypoints):
        one_second = int(CARLA_FPS // (WP_DILATION * DATA_SAVE_FREQ))
        half_second = one_second // 2
        desired_speed = np.linalg.norm(speed_waypoints[half_second - 2] - speed_waypoints[one_second - 2]) * 2.0
        brake = bool((desired_speed < BRAKE_SPEED) or ((speed / desired_speed) > BRAKE_RATIO))
        delta = np.clip(desired_speed - speed, 0.0, CLIP_DELTA)
        throttle = self.speed_controller.step(delta)
        throttle = np.clip(throttle, 0.0, CLIP_THROTTLE)
        throttle = throttle if not brake else 0.0
        route_interp = interpolate_waypoints(route_waypoints.squeeze())
        steer = self.turn_controller.step(route_interp, speed)
        steer = np.clip(steer, -1.0, 1.0)
        steer = round(steer, 3)
        return steer, throttle, brake, desired_speed

    def run_step(self, path, speed_wps, raw_speed):
        speed_f = round(float(raw_speed), 1)  # tick(): round(speed, 1) -> FloatTensor
        speed = np.array([speed_f], dtype=np.float32)
        steer, throttle, brake, desired = self.control_pid(path, speed, speed_wps)
        if speed[0] < 0.1:
            self.stuck_detector += 1
        else:
            self.stuck_detector = 0
        if self.stuck_detector > STUCK_THRESHOLD:
            self.force_move = CREEP_DURATION
        creeping = self.force_move > 0
        if creeping:
            throttle = max(CREEP_THROTTLE, throttle)
            brake = False
            self.force_move -= 1
        # carla.VehicleControl holds float32
        return (float(np.float32(steer)), float(np.float32(np.asarray(throttle).reshape(-1)[0])),
                1.0 if brake else 0.0, float(np.float32(desired)), self.turn_controller.last_index, creeping)


# ---- worked examples (coordinates on a 1/256 m grid so float32 holds them exactly)
def q(v):
    return np.float32(round(v * 256) / 256)


def straight_path():
    return np.array([[q(i + 1.0), q(0.0)] for i in range(20)], dtype=np.float32)


def arc_path(radius, side):
    """20 points 1 m apart in arc length on a circle; side -1 = left (y < 0), +1 = right."""
    return np.array([[q(radius * math.sin((i + 1) / radius)), q(side * radius * (1 - math.cos((i + 1) / radius)))]
                     for i in range(20)], dtype=np.float32)


def speed_wps(spacing):
    return np.array([[q(spacing * (i + 1)), q(0.0)] for i in range(10)], dtype=np.float32)


def rs(v):
    return repr(float(v))


def fmt_out(o):
    steer, throttle, brake, desired, idx, creeping = o
    return f"({rs(steer)}, {rs(throttle)}, {rs(brake)}, {rs(desired)}, {idx}, {str(creeping).lower()})"


def main():
    # --- PCHIP against scipy
    print("// PCHIP: knots, derivatives at the knots, samples (t, value)")
    datasets = {
        "PCHIP_EDGE": ([0., 1., 2., 3., 4.], [0., 1., -4., 1., 2.]),
        "PCHIP_FLAT": ([0., 1., 2., 3., 4., 5.], [0., 1., 0.5, 0.5, 2., 3.]),
        "PCHIP_UNEVEN": ([0., 0.3, 1.1, 1.5, 3.0, 3.2], [1., 2., 2.5, 2.6, 0., -0.5]),
        "PCHIP_TWO": ([0.5, 2.0], [1.0, -2.0]),
    }
    for name, (x, y) in datasets.items():
        f = PchipInterpolator(np.array(x), np.array(y))
        d = [float(v) for v in f.c[2]] + [float(f(x[-1], 1))]
        ts = [x[0] - 0.5, x[0], (x[0] + x[1]) / 2, x[1], 0.77 * x[-1], x[-1] - 1e-3, x[-1], x[-1] + 0.4]
        vals = [(t, float(f(t))) for t in ts]
        print(f"{name}: x={x} y={y}")
        print(f"  d={[rs(v) for v in d]}")
        print(f"  samples={[(rs(t), rs(v)) for t, v in vals]}")

    # --- resampling
    print("\n// Resampling: full_len and samples at indices 0, 23, 24, 50, 105")
    for name, path in [("straight", straight_path()), ("left_r20", arc_path(20.0, -1)),
                       ("right_r20", arc_path(20.0, 1))]:
        r = interpolate_waypoints(path)
        print(name, len(r), [(i, rs(r[i][0]), rs(r[i][1])) for i in (0, 23, 24, 50, 105)])
    short = np.zeros((20, 2), np.float32)
    short[:, 0] = [q(0.004 * (i + 1)) for i in range(20)]  # 0.08 m long: no 0.1 m sample
    r = interpolate_waypoints(short)
    print("short", len(r), [rs(v) for v in r[0]])
    r = interpolate_waypoints(np.zeros((20, 2), np.float32))
    print("zeros", len(r), [rs(v) for v in r[0]])
    three = np.array([[q(0.15 * (i + 1)), q(0.01 * (i + 1))] for i in range(20)], np.float32)  # 3 m long
    r = interpolate_waypoints(three)
    print("three_m", len(r), [rs(v) for v in r[-1]])

    # --- single-step worked examples (fresh agent each)
    print("\n// Single steps: (steer, throttle, brake, desired, lookahead, creeping)")
    cases = [
        ("STRAIGHT", straight_path(), speed_wps(2.5), 9.9),
        ("LEFT", arc_path(20.0, -1), speed_wps(1.5), 5.0),
        ("RIGHT", arc_path(20.0, 1), speed_wps(1.5), 5.0),
        ("STOP", straight_path(), np.tile(np.array([[q(0.5), q(0.0)]], np.float32), (10, 1)), 3.0),
        ("OVERSPEED", straight_path(), speed_wps(1.25), 5.6),
        ("RATIO_EXACT_1_1", straight_path(), speed_wps(1.25), 5.5),
        ("FAST_CLIP", arc_path(60.0, -1), speed_wps(4.0), 30.0),
        ("SHORT_PATH", three, speed_wps(1.5), 10.0),
        ("ZEROS", np.zeros((20, 2), np.float32), np.zeros((10, 2), np.float32), 0.0),
    ]
    for name, p, s, v in cases:
        print(f"const {name}: Out = {fmt_out(Agent().run_step(p, s, v))};")

    # --- sequence exercising both PID windows
    print("\n// Sequence (path kind, radius, speed spacing, speed) -> outputs")
    # speeds near the desired 10 m/s so the throttle is not saturated; call 6 brakes (11.2/10 > 1.1)
    # while the speed PID keeps integrating; lookahead indices vary with speed.
    seq = [("L", 15.0, 2.5, 9.3), ("L", 15.0, 2.5, 9.6), ("R", 30.0, 2.5, 9.9), ("S", 0.0, 2.5, 10.0),
           ("L", 25.0, 2.5, 10.4), ("R", 12.0, 2.5, 11.2), ("R", 12.0, 2.5, 10.6), ("L", 40.0, 2.5, 9.8),
           ("S", 0.0, 2.5, 9.0), ("L", 18.0, 2.5, 9.5)]
    a = Agent()
    for kind, radius, spacing, v in seq:
        p = straight_path() if kind == "S" else arc_path(radius, -1 if kind == "L" else 1)
        print(f"    {fmt_out(a.run_step(p, speed_wps(spacing), v))},")

    # --- stuck / creep
    print("\n// Stuck: 800 stopped calls, then 3 stopped, then moving at exactly 0.1")
    a = Agent()
    stop_s = np.tile(np.array([[q(0.5), q(0.0)]], np.float32), (10, 1))
    outs = [a.run_step(straight_path(), stop_s, 0.0) for _ in range(800)]
    assert all(o[5] is False and o[2] == 1.0 for o in outs)
    more = [a.run_step(straight_path(), stop_s, 0.0) for _ in range(3)]
    moving = [a.run_step(straight_path(), stop_s, np.float32(0.1)) for _ in range(16)]
    print("stopped 801..803:", [fmt_out(o) for o in more])
    print("moving creeping flags:", [o[5] for o in moving])
    print("moving first:", fmt_out(moving[0]), "last:", fmt_out(moving[-1]))
    for v in (0.04, 0.0499, 0.05, 0.0999, 0.149, 0.1):
        print("round", v, "->", repr(round(float(np.float32(v)), 1)), "stopped:", np.float32(round(float(np.float32(v)), 1)) < 0.1)


if __name__ == "__main__":
    main()
