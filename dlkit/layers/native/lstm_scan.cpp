// dlkit's native LSTM scan: the time loop of dlkit.layers.LSTM (backend="native") in C++.
//
// The same equations and buffers as LSTMKernel in dlkit/layers/recurrent_kernels.py, with
// two differences that are the point of this file:
//   * the loop over time runs here, so a step costs no Python interpreter time;
//   * each step's gate arithmetic is one pass over the step's rows, vectorised with
//     ATen's Vectorized<T> (the same SLEEF exp torch's own sigmoid uses), instead of a
//     dozen separate tensor operations that each read and write the step's buffers.
// The matrix products stay ATen calls (addmm_), exactly as in the Python kernel.
//
// Layouts (T steps, B rows, H hidden units, gates in torch's order i, f, g, o):
//   gates  (T, B, 4H)  in: input projections x_t W_ih^T + b_ih + b_hh; out: activated gates
//   c      (T+1, B, H) c[0] = c_0, c[t+1] = c_t
//   tanh_c (T, B, H)   tanh(c_t)
//   y      (T, B, H)   h_t
// sizes[t] is the number of sequences still running at step t (non-increasing); they are
// the first rows of the batch, so a step works on a row prefix and padded rows are never
// written (the caller zero-initialises the buffers of a padded batch).

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <vector>

namespace {

using at::vec::Vectorized;

// A step's rows are split over threads only when there is enough work to pay for waking
// them: below this many elements per step a parallel region costs more than it saves.
constexpr int64_t kGrainElements = 32768;

template <typename T>
inline Vectorized<T> sigmoid(const Vectorized<T>& x) {
  const Vectorized<T> one(T(1));
  return one / (one + x.neg().exp());
}

// tanh(x) = 2 sigmoid(2x) - 1: one exp instead of SLEEF's slower tanh (as tanh_ in
// recurrent_kernels.py); exact at 0 and saturating to +-1 without overflow.
template <typename T>
inline Vectorized<T> tanh_from_sigmoid(const Vectorized<T>& x) {
  const Vectorized<T> one(T(1)), two(T(2));
  return two * sigmoid(two * x) - one;
}

int64_t grain_rows(int64_t H) { return std::max<int64_t>(1, kGrainElements / (4 * H)); }

// Forward of one step's rows [b0, b1): gates in place, c_t, tanh(c_t), h_t.
template <typename T>
void forward_rows(T* gates, const T* c_prev, T* c, T* tanh_c, T* h, int64_t H, int64_t b0, int64_t b1) {
  using V = Vectorized<T>;
  constexpr int64_t W = V::size();
  for (int64_t b = b0; b < b1; ++b) {
    T* gi = gates + b * 4 * H;
    T* gf = gi + H;
    T* gg = gi + 2 * H;
    T* go = gi + 3 * H;
    const T* cp = c_prev + b * H;
    T* cb = c + b * H;
    T* tb = tanh_c + b * H;
    T* hb = h + b * H;
    for (int64_t j = 0; j < H; j += W) {
      const int64_t n = std::min<int64_t>(W, H - j);
      V i = sigmoid(V::loadu(gi + j, n));
      V f = sigmoid(V::loadu(gf + j, n));
      V g = tanh_from_sigmoid(V::loadu(gg + j, n));
      V o = sigmoid(V::loadu(go + j, n));
      V cv = f * V::loadu(cp + j, n) + i * g;
      V tc = tanh_from_sigmoid(cv);
      i.store(gi + j, n);
      f.store(gf + j, n);
      g.store(gg + j, n);
      o.store(go + j, n);
      cv.store(cb + j, n);
      tc.store(tb + j, n);
      (o * tc).store(hb + j, n);
    }
  }
}

// Backward of one step's rows [b0, b1). With dh = dL/dh_t (all paths) and dc holding
// dL/dc_t from step t+1 (and c_n):
//   dc     += dh * o * (1 - tanh^2 c)
//   d o_pre = dh * tanh c * o (1 - o)        d i_pre = dc * g * i (1 - i)
//   d f_pre = dc * c_{t-1} * f (1 - f)       d g_pre = dc * i * (1 - g^2)
//   dc      = dc * f                         (dL/dc_{t-1}, carried in place)
template <typename T>
void backward_rows(const T* gates, const T* c_prev, const T* tanh_c, const T* dh, T* dc, T* d_gates, int64_t H,
                   int64_t b0, int64_t b1) {
  using V = Vectorized<T>;
  constexpr int64_t W = V::size();
  const V one(T(1));
  for (int64_t b = b0; b < b1; ++b) {
    const T* gi = gates + b * 4 * H;
    const T* gf = gi + H;
    const T* gg = gi + 2 * H;
    const T* go = gi + 3 * H;
    T* di = d_gates + b * 4 * H;
    T* df = di + H;
    T* dg = di + 2 * H;
    T* dO = di + 3 * H;
    const T* cp = c_prev + b * H;
    const T* tb = tanh_c + b * H;
    const T* dhb = dh + b * H;
    T* dcb = dc + b * H;
    for (int64_t j = 0; j < H; j += W) {
      const int64_t n = std::min<int64_t>(W, H - j);
      V i = V::loadu(gi + j, n), f = V::loadu(gf + j, n), g = V::loadu(gg + j, n), o = V::loadu(go + j, n);
      V tc = V::loadu(tb + j, n), d = V::loadu(dhb + j, n);
      V dcv = V::loadu(dcb + j, n) + d * o * (one - tc * tc);
      (dcv * g * i * (one - i)).store(di + j, n);
      (dcv * V::loadu(cp + j, n) * f * (one - f)).store(df + j, n);
      (dcv * i * (one - g * g)).store(dg + j, n);
      (d * tc * o * (one - o)).store(dO + j, n);
      (dcv * f).store(dcb + j, n);
    }
  }
}

template <typename T>
void forward_loop(at::Tensor& gates, at::Tensor& c, at::Tensor& tanh_c, at::Tensor& y, const at::Tensor& h0,
                  const at::Tensor& w_hh_t, const std::vector<int64_t>& sizes) {
  const int64_t T_ = gates.size(0), H = y.size(2);
  for (int64_t t = 0; t < T_; ++t) {
    const int64_t n = sizes[t];
    at::Tensor g = gates[t].narrow(0, 0, n);
    g.addmm_(t == 0 ? h0.narrow(0, 0, n) : y[t - 1].narrow(0, 0, n), w_hh_t);
    T* gp = g.data_ptr<T>();
    const T* cp = c[t].data_ptr<T>();
    T* cn = c[t + 1].data_ptr<T>();
    T* tp = tanh_c[t].data_ptr<T>();
    T* hp = y[t].data_ptr<T>();
    at::parallel_for(0, n, grain_rows(H), [&](int64_t b0, int64_t b1) {
      forward_rows<T>(gp, cp, cn, tp, hp, H, b0, b1);
    });
  }
}

template <typename T>
void backward_loop(const at::Tensor& gates, const at::Tensor& c, const at::Tensor& tanh_c, at::Tensor& dh_all,
                   at::Tensor& dc, at::Tensor& d_gates, const at::Tensor& w_hh, at::Tensor& dh0,
                   const std::vector<int64_t>& sizes) {
  const int64_t T_ = gates.size(0), H = tanh_c.size(2);
  T* dcp = dc.data_ptr<T>();
  for (int64_t t = T_ - 1; t >= 0; --t) {
    const int64_t n = sizes[t];
    const T* gp = gates[t].data_ptr<T>();
    const T* cp = c[t].data_ptr<T>();
    const T* tp = tanh_c[t].data_ptr<T>();
    const T* dhp = dh_all[t].data_ptr<T>();
    T* dgp = d_gates[t].data_ptr<T>();
    at::parallel_for(0, n, grain_rows(H), [&](int64_t b0, int64_t b1) {
      backward_rows<T>(gp, cp, tp, dhp, dcp, dgp, H, b0, b1);
    });
    // dL/dh_{t-1} += d gates_t @ W_hh, for the rows running at t (the others got 0).
    at::Tensor dg = d_gates[t].narrow(0, 0, n);
    if (t > 0) {
      dh_all[t - 1].narrow(0, 0, n).addmm_(dg, w_hh);
    } else {
      dh0.narrow(0, 0, n).addmm_(dg, w_hh);
    }
  }
}

void check(const at::Tensor& t, const char* name, const at::Tensor& like) {
  TORCH_CHECK(t.device().is_cpu(), "dlkit native LSTM: ", name, " must be on the CPU");
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), "dlkit native LSTM: ", name, " has dtype ", t.scalar_type(),
              ", expected ", like.scalar_type());
  TORCH_CHECK(t.is_contiguous(), "dlkit native LSTM: ", name, " must be contiguous");
}

}  // namespace

// Runs the forward loop in place: gates (pre-activations in, activated gates out), c[1:],
// tanh_c and y. h0 is (B, H); w_hh_t is W_hh^T, (H, 4H).
void lstm_forward(at::Tensor gates, at::Tensor c, at::Tensor tanh_c, at::Tensor y, at::Tensor h0, at::Tensor w_hh_t,
                  std::vector<int64_t> sizes) {
  for (auto& [t, name] : std::vector<std::pair<at::Tensor*, const char*>>{
           {&c, "c"}, {&tanh_c, "tanh_c"}, {&y, "y"}, {&h0, "h0"}, {&w_hh_t, "w_hh_t"}}) {
    check(*t, name, gates);
  }
  check(gates, "gates", gates);
  TORCH_CHECK(static_cast<int64_t>(sizes.size()) == gates.size(0), "dlkit native LSTM: ", sizes.size(),
              " sizes for ", gates.size(0), " steps");
  at::NoGradGuard no_grad;
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "dlkit_lstm_forward", [&] {
    forward_loop<scalar_t>(gates, c, tanh_c, y, h0, w_hh_t, sizes);
  });
}

// Runs the backward loop: fills d_gates (zeros on entry for a padded batch) and dh0,
// accumulates into dh_all (dL/dh_t from the outputs, in; all paths, out) and carries dc
// (dL/dc_n in, dL/dc_0 out). w_hh is (4H, H).
void lstm_backward(at::Tensor gates, at::Tensor c, at::Tensor tanh_c, at::Tensor dh_all, at::Tensor dc,
                   at::Tensor d_gates, at::Tensor w_hh, at::Tensor dh0, std::vector<int64_t> sizes) {
  for (auto& [t, name] : std::vector<std::pair<at::Tensor*, const char*>>{
           {&c, "c"}, {&tanh_c, "tanh_c"}, {&dh_all, "dh_all"}, {&dc, "dc"}, {&d_gates, "d_gates"},
           {&w_hh, "w_hh"}, {&dh0, "dh0"}}) {
    check(*t, name, gates);
  }
  check(gates, "gates", gates);
  TORCH_CHECK(static_cast<int64_t>(sizes.size()) == gates.size(0), "dlkit native LSTM: ", sizes.size(),
              " sizes for ", gates.size(0), " steps");
  at::NoGradGuard no_grad;
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "dlkit_lstm_backward", [&] {
    backward_loop<scalar_t>(gates, c, tanh_c, dh_all, dc, d_gates, w_hh, dh0, sizes);
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("lstm_forward", &lstm_forward, "dlkit LSTM scan, forward loop (in place)");
  m.def("lstm_backward", &lstm_backward, "dlkit LSTM scan, backward loop (in place)");
}
