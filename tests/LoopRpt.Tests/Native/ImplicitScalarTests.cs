using System.Reflection;
using System.Reflection.Emit;
using TorchSharp;

namespace LoopRpt.Tests.Native;

/// <summary>
/// Scans the compiled per-step code (IL, so lambdas, local functions and async bodies are covered) for TorchSharp
/// <see cref="Scalar"/>s that nobody holds: a C# implicit conversion to Scalar (<c>t * 0.5</c>, <c>t &gt;= 0</c>,
/// <c>arange(0, n)</c>), or a call to a TorchSharp method that makes one inside (<c>a + b</c> and <c>add_(x)</c> pass an
/// alpha of 1, <c>square()</c> an exponent of 2). Such a Scalar can be finalized by the GC while libtorch still reads it.
/// An explicit <c>ToScalar()</c> is allowed: the code holds it (a field or a <c>using</c> local).
/// </summary>
public class ImplicitScalarTests
{
    // Namespaces of per-step and per-token code: the model, inference, evaluation, the objectives and the trainer.
    private static readonly string[] CoreNamespaces = ["LoopRpt.Model", "LoopRpt.Inference", "LoopRpt.Evaluation", "LoopRpt.Objectives", "LoopRpt.Training"];

    // Faces checked whole.
    private static readonly string[] FaceAssemblies = ["LoopRpt.AI", "LoopRpt.Server", "LoopRpt.Hosting"];

    // "Type::Method" of setup-only code allowed to convert implicitly; each with the reason. Empty today.
    private static readonly HashSet<string> Allowed = [];

    private const BindingFlags All = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;

    private static readonly Dictionary<short, OpCode> OpCodesByValue = typeof(OpCodes).GetFields(BindingFlags.Public | BindingFlags.Static)
        .Select(f => (OpCode)f.GetValue(null)!).ToDictionary(o => o.Value);

    [Fact]
    public void PerStepCodeCreatesNoImplicitScalars()
    {
        var hidden = TorchSharpMethodsThatCreateScalars();
        Assert.Contains(typeof(torch.Tensor).GetMethod("add", [typeof(torch.Tensor)])!, hidden);   // the scan can fail
        Assert.Contains(typeof(torch.Tensor).GetMethod("op_Addition", [typeof(torch.Tensor), typeof(torch.Tensor)])!, hidden);

        var core = typeof(LoopRpt.Model.OuroForCausalLM).Assembly;
        var faces = FaceAssemblies.Select(Assembly.Load);
        var methods = Types(core).Where(t => CoreNamespaces.Any(n => t.Namespace is { } ns && (ns == n || ns.StartsWith(n + ".", StringComparison.Ordinal))))
            .Concat(faces.SelectMany(Types))
            .SelectMany(t => t.GetMethods(All).Cast<MethodBase>().Concat(t.GetConstructors(All)));
        var offenders = new List<string>();
        foreach (var m in methods)
        {
            if (m.DeclaringType is null || m.GetMethodBody() is null) continue;
            string name = $"{Outer(m.DeclaringType).FullName}::{m.Name}";
            if (Allowed.Contains(name)) continue;
            var bad = CallSites(m).Where(c => IsImplicitConversion(c.Callee) && !c.Held || hidden.Contains(c.Callee)).Select(c => Describe(c.Callee)).ToList();
            if (bad.Count > 0) offenders.Add($"{m.DeclaringType.FullName}::{m.Name}: {string.Join(", ", bad)}");
        }
        Assert.True(offenders.Count == 0, "Implicit Scalars on per-step paths (hold them, or use HeldScalars):\n" + string.Join("\n", offenders));
    }

    [Fact]
    public void TheScanFindsTheImplicitScalarsOfAKnownBadMethod()
    {
        var hidden = TorchSharpMethodsThatCreateScalars();
        var bad = typeof(ImplicitScalarTests).GetMethod(nameof(KnownBad), All)!;
        var found = CallSites(bad).Where(c => IsImplicitConversion(c.Callee) && !c.Held || hidden.Contains(c.Callee)).Select(c => Describe(c.Callee)).ToList();
        Assert.Equal(5, found.Count);   // t * 0.5 (an operator that converts inside), t + t (alpha), add_(t) (alpha), t >= 0 (conversion here), a local never disposed
        var good = typeof(ImplicitScalarTests).GetMethod(nameof(KnownGood), All)!;
        Assert.DoesNotContain(CallSites(good), c => IsImplicitConversion(c.Callee) && !c.Held || hidden.Contains(c.Callee));
        Assert.Contains(CallSites(good), c => IsImplicitConversion(c.Callee) && c.Held);           // the using local: held
    }

    private static torch.Tensor KnownBad(torch.Tensor t)
    {
        Scalar two = 2.0;                                   // stored, but nothing keeps it alive past its last use
        return ((t * 0.5) + t).add_(t).ge(0).mul(two);
    }

    private static torch.Tensor KnownGood(torch.Tensor t, Scalar half, Scalar one)
    {
        using var zero = 0L.ToScalar();
        using Scalar two = 2.0;                             // an implicit conversion into a using local: disposed after the call
        return t.mul(half).add(t, one).add_(t, one).ge(zero).mul(two);
    }

    private static Type Outer(Type t) => t.DeclaringType is null ? t : Outer(t.DeclaringType);

    private static string Describe(MethodBase c)
        => IsImplicitConversion(c) ? $"implicit {c.DeclaringType!.Name} from {c.GetParameters()[0].ParameterType.Name}"
            : $"{c.DeclaringType!.Name}.{c.Name}({string.Join(", ", c.GetParameters().Select(p => p.ParameterType.Name))})";

    // A Scalar, or a temporary tensor made from a number or a Scalar (pow(2.0, t)), that nobody holds.
    private static bool IsImplicitConversion(MethodBase c)
        => c.Name == "op_Implicit" && (c.DeclaringType == typeof(Scalar) || c.DeclaringType == typeof(torch.Tensor) && ((MethodInfo)c).ReturnType == typeof(torch.Tensor));

    private static Type[] Types(Assembly a)
    {
        try { return a.GetTypes(); }
        catch (ReflectionTypeLoadException e) { return [.. e.Types.OfType<Type>()]; }
    }

    /// <summary>TorchSharp methods that make a Scalar of their own, directly or through the methods they call.</summary>
    private static HashSet<MethodBase> TorchSharpMethodsThatCreateScalars()
    {
        var ts = typeof(torch).Assembly;
        var methods = Types(ts).Where(t => t != typeof(Scalar))
            .SelectMany(t => t.GetMethods(All).Cast<MethodBase>().Concat(t.GetConstructors(All))).ToList();
        var calls = methods.ToDictionary(m => m, m => Calls(m).ToList());
        var hidden = new HashSet<MethodBase>(methods.Where(m => calls[m].Any(c => c.Name == "op_Implicit" && c.DeclaringType == typeof(Scalar) || c.Name == "ToScalar" && c.DeclaringType?.Assembly == ts)));
        for (bool grew = true; grew;)
        {
            grew = false;
            foreach (var m in methods)
                if (!hidden.Contains(m) && calls[m].Any(hidden.Contains)) grew = hidden.Add(m) || grew;
        }
        return hidden;
    }

    /// <summary>The methods and constructors a method's IL calls.</summary>
    private static IEnumerable<MethodBase> Calls(MethodBase m) => CallSites(m).Select(c => c.Callee);

    /// <summary>
    /// A call and whether its result is held: stored into a field (its owner keeps it), or into a local that the method
    /// later loads to call <c>Dispose</c> on (a <c>using</c> local, alive until the native call has returned).
    /// </summary>
    private readonly record struct CallSite(MethodBase Callee, bool Held);

    private static IEnumerable<CallSite> CallSites(MethodBase m)
    {
        byte[]? il;
        try { il = m.GetMethodBody()?.GetILAsByteArray(); }
        catch (Exception e) when (e is BadImageFormatException or InvalidOperationException or NotSupportedException) { yield break; }
        if (il is null) yield break;
        var typeArgs = m.DeclaringType is { IsGenericType: true } d ? d.GetGenericArguments() : null;
        var methodArgs = m.IsGenericMethod ? m.GetGenericArguments() : null;
        var code = new List<(OpCode Op, int Operand)>();
        for (int i = 0; i < il.Length;)
        {
            var op = il[i] == 0xFE ? OpCodesByValue[(short)(0xFE00 | il[i + 1])] : OpCodesByValue[il[i]];
            i += op.Size;
            int size = op.OperandType switch
            {
                OperandType.InlineNone => 0,
                OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar => 1,
                OperandType.InlineVar => 2,
                OperandType.InlineI8 or OperandType.InlineR => 8,
                OperandType.InlineSwitch => 4 + 4 * BitConverter.ToInt32(il, i),
                _ => 4,
            };
            int operand = size switch { 1 => il[i], 2 => BitConverter.ToUInt16(il, i), 4 => BitConverter.ToInt32(il, i), _ => 0 };
            code.Add((op, operand));
            i += size;
        }
        MethodBase? Resolve(int token)
        {
            try { return m.Module.ResolveMethod(token, typeArgs, methodArgs); }
            catch (Exception e) when (e is ArgumentException or BadImageFormatException or TypeLoadException or FileNotFoundException) { return null; }
        }
        static int? Local(OpCode op, int operand, bool store)
        {
            if (store) return op == OpCodes.Stloc_0 ? 0 : op == OpCodes.Stloc_1 ? 1 : op == OpCodes.Stloc_2 ? 2 : op == OpCodes.Stloc_3 ? 3
                : op == OpCodes.Stloc_S || op == OpCodes.Stloc ? operand : null;
            return op == OpCodes.Ldloc_0 ? 0 : op == OpCodes.Ldloc_1 ? 1 : op == OpCodes.Ldloc_2 ? 2 : op == OpCodes.Ldloc_3 ? 3
                : op == OpCodes.Ldloc_S || op == OpCodes.Ldloc ? operand : null;
        }
        bool DisposedLater(int k, int local)
        {
            for (int j = k + 1; j + 1 < code.Count; j++)
                if (Local(code[j].Op, code[j].Operand, store: false) == local && (code[j + 1].Op == OpCodes.Callvirt || code[j + 1].Op == OpCodes.Call)
                    && Resolve(code[j + 1].Operand) is { Name: "Dispose" }) return true;
            return false;
        }
        for (int k = 0; k < code.Count; k++)
        {
            var (op, operand) = code[k];
            if (op != OpCodes.Call && op != OpCodes.Callvirt && op != OpCodes.Newobj) continue;
            if (Resolve(operand) is not { } callee) continue;
            bool held = false;
            if (k + 1 < code.Count)
            {
                var next = code[k + 1];
                held = next.Op == OpCodes.Stfld || next.Op == OpCodes.Stsfld
                    || Local(next.Op, next.Operand, store: true) is { } local && DisposedLater(k + 1, local);
            }
            yield return new CallSite(callee, held);
        }
    }
}
