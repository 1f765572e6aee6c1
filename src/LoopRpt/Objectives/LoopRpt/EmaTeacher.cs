using TorchSharp;
using LoopRpt.Model;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LoopRpt.Objectives;

/// <summary>
/// The slowly moving EMA copy of the student that LoopRPT rewards against (docs/method.md §4): a second
/// <see cref="OuroForCausalLM"/> with the student's config, device and dtype, weights copied at creation, no gradients,
/// updated in place after every optimizer step: theta_bar ← d theta_bar + (1 - d) theta.
/// <para>With a bfloat16 student the teacher is bfloat16 too, and an update of (1 - d) = 0.5% of a small gap can fall
/// below bfloat16's resolution (a known limitation of a same-dtype EMA); a float32 student has no such loss.</para>
/// </summary>
public sealed class EmaTeacher : IDisposable
{
    private readonly List<(string Name, Parameter Teacher, Parameter Student)> _pairs;

    /// <summary>Builds the teacher as an exact copy of <paramref name="student"/>.</summary>
    public EmaTeacher(OuroForCausalLM student)
    {
        ArgumentNullException.ThrowIfNull(student);
        // A fixed local generator: the initial values are overwritten, and the global RNG must not be touched.
        using var init = new Generator(0);
        Model = new OuroForCausalLM(student.Config, student.Device, student.DType, init);
        var studentParams = student.UniqueParameters().ToDictionary(p => p.Name, p => p.Param, StringComparer.Ordinal);
        _pairs = [];
        foreach (var (name, p) in Model.UniqueParameters())
        {
            if (!studentParams.TryGetValue(name, out var s))
                throw new InvalidOperationException($"The teacher has parameter '{name}' that the student lacks.");
            p.requires_grad = false;
            _pairs.Add((name, p, s));
        }
        Model.eval();
        CopyFromStudent();
    }

    /// <summary>The teacher model (no gradients; do not train it).</summary>
    public OuroForCausalLM Model { get; }

    /// <summary>Parameters by name (the names of <see cref="OuroForCausalLM.UniqueParameters"/>).</summary>
    public IEnumerable<(string Name, Tensor Tensor)> Parameters => _pairs.Select(p => (p.Name, (Tensor)p.Teacher));

    /// <summary>theta_bar ← theta.</summary>
    public void CopyFromStudent()
    {
        using var noGrad = no_grad();
        foreach (var (_, t, s) in _pairs) t.copy_(s);
    }

    /// <summary>theta_bar ← d theta_bar + (1 - d) theta, in place, without gradients.</summary>
    public void Update(double decay)
    {
        if (!(decay is >= 0 and <= 1)) throw new ArgumentOutOfRangeException(nameof(decay), decay, "The EMA decay must lie in [0, 1].");
        using var noGrad = no_grad();
        using Scalar d = decay, oneMinusD = 1 - decay;                   // held for the update (docs/platform.md §2)
        foreach (var (_, t, s) in _pairs) t.mul_(d).add_(s, oneMinusD);
    }

    public void Dispose() => Model.Dispose();
}
