using TorchSharp;
using static TorchSharp.torch;

namespace LoopRpt.Model;

/// <summary>
/// Rotary position embedding, rotate-half form. Not a module: cos/sin tables are derived from the config and cached
/// per device/dtype, so they never appear in the state dict (the reference's <c>inv_freq</c> is a non-persistent buffer).
/// </summary>
public sealed class Rope : IDisposable
{
    private readonly int _headDim;
    private readonly double _theta;
    private Tensor? _cos, _sin; // (maxLen, D)
    // Scorers share one model across threads (LoopRpt.Hosting): the lazy cache must not be read while it is rebuilt.
    private readonly object _gate = new();

    public Rope(int headDim, double theta)
    {
        _headDim = headDim;
        _theta = theta;
    }

    /// <summary>cos and sin for positions [offset, offset + length): each (length, D), on the given device and dtype.</summary>
    public (Tensor Cos, Tensor Sin) Get(long offset, long length, Device device, ScalarType dtype)
    {
        long need = offset + length;
        lock (_gate)
        {
            if (_cos is null || _cos.shape[0] < need || _cos.device != device || _cos.dtype != dtype)
                Build(Math.Max(need, _cos is null ? 0 : _cos.shape[0]), device, dtype);
            // Views keep the storage alive, so a later rebuild (which disposes the old tables) cannot pull it from under a caller.
            return (_cos!.narrow(0, offset, length), _sin!.narrow(0, offset, length));
        }
    }

    /// <summary>cos/sin rows gathered at arbitrary positions (for adaptive exit and cached decoding): (N, D) each.</summary>
    public (Tensor Cos, Tensor Sin) Gather(Tensor positions, Device device, ScalarType dtype)
    {
        long need = positions.numel() == 0 ? 1 : positions.max().item<long>() + 1;
        lock (_gate)
        {
            Get(0, need, device, dtype);
            return (_cos!.index_select(0, positions), _sin!.index_select(0, positions));
        }
    }

    private void Build(long length, Device device, ScalarType dtype)
    {
        _cos?.Dispose();
        _sin?.Dispose();
        using var scope = NewDisposeScope();
        // inv_freq_i = theta^(-2i/D), i = 0..D/2-1, computed in float64 for accuracy then cast.
        using var theta = tensor(_theta, ScalarType.Float64);
        using var headDim = ((double)_headDim).ToScalar();
        using var zero = 0L.ToScalar();
        using var two = 2L.ToScalar();
        using var end = ((long)_headDim).ToScalar();
        var inv = pow(theta, -arange(zero, end, two, ScalarType.Float64).div(headDim));
        var pos = HeldScalars.Arange(0, length, ScalarType.Float64, null);
        var freqs = outer(pos, inv);                       // (L, D/2)
        var emb = cat([freqs, freqs], dim: -1);            // (L, D)
        _cos = emb.cos().to(dtype, device).DetachFromDisposeScope();     // owned by this cache, not by any caller scope
        _sin = emb.sin().to(dtype, device).DetachFromDisposeScope();
    }

    /// <summary>x * cos + rotate_half(x) * sin, with cos/sin broadcast over batch and heads.</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        long half = x.shape[^1] / 2;
        var x1 = x[TensorIndex.Ellipsis, TensorIndex.Slice(0, half)];
        var x2 = x[TensorIndex.Ellipsis, TensorIndex.Slice(half)];
        var rotated = cat([-x2, x1], dim: -1);
        return (x * cos).PlusInPlace(rotated * sin);
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _cos?.Dispose();
            _sin?.Dispose();
            _cos = _sin = null;
        }
    }
}
