using System.Collections.Concurrent;

namespace LoopRpt.Hosting;

/// <summary>
/// One dedicated thread that runs all training work, one item at a time. TorchSharp dispose scopes are thread-local, so
/// tensor code runs start to finish on this thread and the async caller only awaits the result.
/// It is a background thread: if the host's shutdown timeout expires, the process may exit mid-step; files are written
/// atomically, so that leaves the previous checkpoint intact.
/// </summary>
internal sealed class TrainingThread : IDisposable
{
    private readonly BlockingCollection<Action> _queue = new();
    private readonly Thread _thread;

    public TrainingThread(string name)
    {
        _thread = new Thread(Loop) { IsBackground = true, Name = name };
        _thread.Start();
    }

    public int ManagedThreadId => _thread.ManagedThreadId;

    /// <summary>Runs <paramref name="work"/> on the thread; the task completes (continuations on the thread pool) with its result or exception.</summary>
    public Task<T> RunAsync<T>(Func<T> work)
    {
        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        _queue.Add(() =>
        {
            try { done.SetResult(work()); }
            catch (Exception e) { done.SetException(e); }
        });
        return done.Task;
    }

    private void Loop()
    {
        foreach (var work in _queue.GetConsumingEnumerable()) work();
    }

    public void Dispose()
    {
        _queue.CompleteAdding();
        if (Thread.CurrentThread != _thread) _thread.Join();
        _queue.Dispose();
    }
}
